import type { Context } from "hono";
import { ApiError, type FieldError } from "./errors";
import { MAX_LIMIT, MAX_WINDOW_SECONDS, type Policy } from "./ratelimit/window";

const ISO_INSTANT = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|([+-])(\d{2}):(\d{2}))$/;
/** The last instant whose `toISOString()` has four year digits. */
const LATEST_INSTANT = new Date("9999-12-31T23:59:59.999Z");

/** Largest request body accepted, in bytes; larger bodies get 413 `payload_too_large`. */
export const MAX_BODY_BYTES = 16 * 1024;

/** Parses a JSON object body: 415 unless the body is declared JSON, 400 unless it parses to an object. */
export async function readJson(c: Context): Promise<Record<string, unknown>> {
  const type = c.req.header("Content-Type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new ApiError("unsupported_media_type", "Send the body as JSON with `Content-Type: application/json`.");
  }
  let body: unknown;
  try {
    body = JSON.parse(await c.req.text());
  } catch {
    throw new ApiError("malformed_json", "The request body is not valid JSON.");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ApiError("invalid_request", "The request body must be a JSON object.");
  }
  return body as Record<string, unknown>;
}

/**
 * Reads fields of a parsed body, collecting every problem so one 400 lists them all. Unknown fields are errors:
 * a misspelt `mailboxId` must not silently create a full-access key.
 */
export class Fields {
  private readonly seen = new Set<string>();
  private readonly children: Fields[] = [];

  constructor(
    private readonly body: Record<string, unknown>,
    private readonly prefix = "",
    readonly errors: FieldError[] = [],
  ) {}

  private take(name: string): unknown {
    this.seen.add(name);
    return this.body[name];
  }

  /** Whether the field is present and null (marks it seen). */
  isNull(name: string): boolean {
    return this.take(name) === null;
  }

  /** Records a problem with a field (named relative to this object); returns undefined for convenience. */
  fail(field: string, message: string): undefined {
    this.errors.push({ field: this.prefix + field, message });
    return undefined;
  }

  string(name: string, opts: { required?: boolean; max?: number; pattern?: RegExp; hint?: string } = {}): string | undefined {
    const v = this.take(name);
    if (v === undefined || v === null) return opts.required ? this.fail(name, "is required") : undefined;
    if (typeof v !== "string") return this.fail(name, "must be a string");
    const s = v.trim();
    if (s.length === 0) return this.fail(name, "must not be empty");
    if (opts.max !== undefined && s.length > opts.max) return this.fail(name, `must be at most ${opts.max} characters`);
    if (opts.pattern && !opts.pattern.test(s)) return this.fail(name, opts.hint ?? "has an invalid format");
    return s;
  }

  boolean(name: string): boolean | undefined {
    const v = this.take(name);
    if (v === undefined) return undefined;
    if (typeof v !== "boolean") return this.fail(name, "must be true or false");
    return v;
  }

  integer(name: string, min: number, max: number, required = false): number | undefined {
    const v = this.take(name);
    if (v === undefined) return required ? this.fail(name, "is required") : undefined;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
      return this.fail(name, `must be an integer from ${min} to ${max}`);
    return v;
  }

  oneOf<T extends string>(name: string, values: readonly T[], required = false): T | undefined {
    const v = this.take(name);
    if (v === undefined) return required ? this.fail(name, "is required") : undefined;
    if (typeof v !== "string" || !values.includes(v as T)) return this.fail(name, `must be one of: ${values.join(", ")}`);
    return v as T;
  }

  /**
   * A future instant given as an ISO-8601 date-time with a timezone; returned normalised to UTC. Only real calendar
   * dates and times (no 30 February, no hour 24, offsets up to ±23:59) up to the end of year 9999 UTC, so that every
   * stored instant has the fixed-width form of `toISOString()` and instants compare correctly as text in SQL.
   */
  futureDate(name: string, now: Date): string | null | undefined {
    const v = this.take(name);
    if (v === undefined || v === null) return v;
    const m = typeof v === "string" ? ISO_INSTANT.exec(v) : null;
    if (!m) return this.fail(name, "must be an ISO-8601 date-time with a timezone, e.g. 2027-01-01T00:00:00Z");
    type Parts = [number, number, number, number, number, number, number, number];
    const [y, mo, d, h, mi, sec, oh, om] = [1, 2, 3, 4, 5, 6, 10, 11].map((i) => Number(m[i] ?? 0)) as Parts;
    const calendar = new Date(Date.UTC(y, mo - 1, d));
    const real = calendar.getUTCFullYear() === y && calendar.getUTCMonth() === mo - 1 && calendar.getUTCDate() === d;
    if (!real || h > 23 || mi > 59 || sec > 59 || oh > 23 || om > 59) {
      return this.fail(name, "is not a real date and time");
    }
    const instant = new Date(v as string);
    if (Number.isNaN(instant.getTime()) || instant > LATEST_INSTANT) return this.fail(name, "must be no later than 9999-12-31T23:59:59Z");
    if (instant <= now) return this.fail(name, "must be in the future");
    return instant.toISOString();
  }

  stringArray(name: string, opts: { maxItems: number; pattern: RegExp; hint: string }): string[] | undefined {
    const v = this.take(name);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.length === 0) return this.fail(name, "must be a non-empty array of strings");
    if (v.length > opts.maxItems) return this.fail(name, `must have at most ${opts.maxItems} items`);
    const bad = v.findIndex((s) => typeof s !== "string" || !opts.pattern.test(s));
    if (bad >= 0) return this.fail(`${name}[${bad}]`, opts.hint);
    return [...new Set(v as string[])];
  }

  /** A nested object whose fields report as `name.field`. */
  object(name: string, required = false): Fields | undefined {
    const v = this.take(name);
    if (v === undefined) return required ? this.fail(name, "is required") : undefined;
    if (typeof v !== "object" || v === null || Array.isArray(v)) return this.fail(name, "must be an object");
    const child = new Fields(v as Record<string, unknown>, `${this.prefix}${name}.`, this.errors);
    this.children.push(child);
    return child;
  }

  private unknownFields(): void {
    for (const name of Object.keys(this.body)) {
      if (!this.seen.has(name)) this.fail(name, "is not a known field");
    }
    for (const child of this.children) child.unknownFields();
  }

  /** Throws one 400 listing every invalid or unknown field. */
  done(): void {
    this.unknownFields();
    if (this.errors.length > 0) {
      throw new ApiError("invalid_request", `Invalid fields: ${this.errors.map((e) => e.field).join(", ")}.`, { errors: this.errors });
    }
  }
}

/** A `{limit, windowSeconds}` object, both required when the object is given; `null` only where `nullable` ("none"). */
export function readRateLimit(f: Fields, name = "rateLimit", opts: { nullable?: boolean } = {}): Policy | null | undefined {
  if (opts.nullable && f.isNull(name)) return null;
  const p = f.object(name);
  if (!p) return undefined;
  const limit = p.integer("limit", 1, MAX_LIMIT, true);
  const windowSeconds = p.integer("windowSeconds", 1, MAX_WINDOW_SECONDS, true);
  return limit === undefined || windowSeconds === undefined ? undefined : { limit, windowSeconds };
}
