ALTER TABLE `accounts` ADD `user_credits` text;--> statement-breakpoint
ALTER TABLE `credit_ledger` ADD `user_id` text;--> statement-breakpoint
CREATE INDEX `credit_ledger_user_at` ON `credit_ledger` (`user_id`,`at`,`id`);--> statement-breakpoint
ALTER TABLE `plans` ADD `user_credits` text;