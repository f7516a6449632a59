ALTER TABLE `accounts` ADD `credits` text;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `credits` text;--> statement-breakpoint
ALTER TABLE `plans` ADD `credits` text;