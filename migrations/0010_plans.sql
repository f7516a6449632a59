CREATE TABLE `plans` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`rate_limits` text NOT NULL,
	`created_at` text NOT NULL,
	`updated_at` text NOT NULL
);
--> statement-breakpoint
ALTER TABLE `accounts` ADD `plan_id` text REFERENCES plans(id);--> statement-breakpoint
CREATE INDEX `accounts_plan` ON `accounts` (`plan_id`);