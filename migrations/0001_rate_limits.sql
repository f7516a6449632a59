ALTER TABLE `accounts` ADD `rate_limit` integer DEFAULT 60 NOT NULL;--> statement-breakpoint
ALTER TABLE `accounts` ADD `rate_limit_window_seconds` integer DEFAULT 60 NOT NULL;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `rate_limit` integer;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `rate_limit_window_seconds` integer;