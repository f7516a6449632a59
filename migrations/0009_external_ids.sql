ALTER TABLE `accounts` ADD `external_id` text;--> statement-breakpoint
ALTER TABLE `accounts` ADD `meta` text;--> statement-breakpoint
CREATE UNIQUE INDEX `accounts_external_id` ON `accounts` (`external_id`);--> statement-breakpoint
ALTER TABLE `api_keys` ADD `external_id` text;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `meta` text;--> statement-breakpoint
CREATE UNIQUE INDEX `api_keys_account_external_id` ON `api_keys` (`account_id`,`external_id`);