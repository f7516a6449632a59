ALTER TABLE `accounts` ADD `rate_limits` text;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `rate_limits` text;