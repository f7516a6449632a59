ALTER TABLE `sessions` ADD `previous_refresh_hash` text;--> statement-breakpoint
ALTER TABLE `sessions` ADD `refreshed_at` text;