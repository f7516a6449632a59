CREATE TABLE `credit_ledger` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`key_id` text,
	`at` text NOT NULL,
	`delta` integer NOT NULL,
	`balance_after` integer NOT NULL,
	`kind` text NOT NULL,
	`count` integer DEFAULT 1 NOT NULL,
	`request_id` text,
	`actor` text,
	`reason` text
);
--> statement-breakpoint
CREATE INDEX `credit_ledger_owner_at` ON `credit_ledger` (`account_id`,`key_id`,`at`,`id`);--> statement-breakpoint
ALTER TABLE `key_usage` ADD `credits_spent` integer DEFAULT 0 NOT NULL;