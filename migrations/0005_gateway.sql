ALTER TABLE `accounts` ADD `slug` text;--> statement-breakpoint
CREATE UNIQUE INDEX `accounts_slug` ON `accounts` (`slug`);--> statement-breakpoint
ALTER TABLE `users` ADD `grants` text DEFAULT '["*"]' NOT NULL;