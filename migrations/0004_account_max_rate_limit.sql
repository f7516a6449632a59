ALTER TABLE `accounts` ADD `max_rate_limit` integer;--> statement-breakpoint
ALTER TABLE `accounts` ADD `max_rate_limit_window_seconds` integer;