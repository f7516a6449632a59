import { DurableObject } from "cloudflare:workers";
import type { Bindings } from "../env";

/** Counts requests for one limited identity (one object per key or client IP), in SQLite-backed storage. */
export class RateLimiter extends DurableObject<Bindings> {}
