CREATE TABLE `agent_origins` (
	`agent_id` text NOT NULL,
	`origin` text NOT NULL,
	FOREIGN KEY (`agent_id`) REFERENCES `agents`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `agent_origins_agent_origin` ON `agent_origins` (`agent_id`,`origin`);--> statement-breakpoint
CREATE INDEX `agent_origins_origin` ON `agent_origins` (`origin`);--> statement-breakpoint
CREATE TABLE `agents` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`name` text NOT NULL,
	`allowed_origins` text NOT NULL,
	`token_ttl_seconds` integer NOT NULL,
	`disabled` integer DEFAULT false NOT NULL,
	`created_at` text NOT NULL,
	FOREIGN KEY (`account_id`) REFERENCES `accounts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `agents_account_created` ON `agents` (`account_id`,`created_at`);