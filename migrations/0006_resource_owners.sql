CREATE TABLE `resource_owners` (
	`type` text NOT NULL,
	`resource_id` text NOT NULL,
	`account_id` text NOT NULL,
	`created_at` text NOT NULL,
	PRIMARY KEY(`type`, `resource_id`),
	FOREIGN KEY (`account_id`) REFERENCES `accounts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `resource_owners_account` ON `resource_owners` (`account_id`);