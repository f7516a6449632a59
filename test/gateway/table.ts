import { env } from "cloudflare:workers";
import { ORIGIN, through } from "../helpers";

export const UPSTREAM = env.TEST_UPSTREAM_URL;

/** The route table of the providers the gateway serves, as an operator would write it. */
export const ROUTES = [
  // Robotomail: a mailbox-scoped key reaches only its mailboxes; listing and creating mailboxes need full access.
  { pattern: "/v1/mailboxes/:mailboxId/*", resource: { type: "mailbox", param: "mailboxId" } },
  // Roboticks: the organization in the URL must be the caller's own; the project must be granted.
  { pattern: "/api/v1/organizations/:org/projects/:project/*", account: "org", resource: { type: "project", param: "project" } },
  // RPA Watch: process-scoped keys.
  { pattern: "/v1/processes/:processId/runs", methods: ["DELETE"], access: "full", resource: { type: "process", param: "processId" } },
  { pattern: "/v1/processes/:processId/*", resource: { type: "process", param: "processId" } },
  { pattern: "/v1/reports/*", cost: 5 },
  // Robofy: the widget's chat takes handshake tokens.
  { pattern: "/v1/chat/*", auth: "key-or-token" },
  { pattern: "/v1/status", auth: "public" },
  { pattern: "/*", access: "full" },
];

export const GATEWAY = { UPSTREAM_URL: UPSTREAM, GATEWAY_ROUTES: JSON.stringify(ROUTES), PUBLIC_ORIGIN: ORIGIN };

/** What the test upstream (test/upstream.mjs) answers: what it received. */
export type Echo = { method: string; url: string; headers: Record<string, string>; body: string | null; bytes: number };

/** A request through the gateway with this table, and these bindings replaced. */
export function gw(path: string, init: Parameters<typeof through>[2] = {}, overrides: Partial<Cloudflare.Env> = {}) {
  return through({ ...GATEWAY, ...overrides }, path, init);
}
