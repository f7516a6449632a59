import { DurableObject } from "cloudflare:workers";
import type { LedgerEntry } from "../core/balance";
import { storedCredits } from "../core/credits";
import { FanIn, leaseMs, type Relays } from "../core/lease";
import type { AuthMethod } from "../core/principal";
import { keyRefusal, type Need, type Principal, type Refusal, refusal } from "../core/principal";
import { Budget } from "../counters/budget";
import { LedgerOutbox, type LedgerOwner } from "../counters/ledger";
import { Notices } from "../counters/notices";
import type { CallTag, Granted, Refund, Spending, Unspent } from "../counters/protocol";
import type { Adjusted, Adjustment, CreditsView } from "../counters/stored-balance";
import { BOOKMARK_KEY, RECORD_TTL_MS, TrustedRecords, UNSETTLED_TRUST_MS } from "../counters/trusted";
import { getConfig } from "../platform/config";
import { db, session, withDeadline } from "../platform/db/client";
import type { Bindings } from "../platform/env";
import { log, safeError } from "../platform/log";
import type { UsageMessage } from "../usage/queue";
import type { UsageHour } from "../usage/service";
import { FLUSH_INTERVAL_MS, UsageHistory } from "../usage/tally";
import { keyEvent } from "./events";
import { evaluateKey, type KeyRecord, LAST_USED_INTERVAL_MS, loadKey, type VerifyResult } from "./store";

/** A key as its object holds it: the record, the verdict on it and the instant that verdict may change. */
type KeyState = {
  record: KeyRecord | undefined;
  /** This object's id is the one worked out from a hash that names a key issued before, with the id it has (see keyIdOf). */
  movedTo?: string;
  verdict: VerifyResult;
  until: number;
  lastUsed: number;
  lastMethod: AuthMethod | null;
};

/** The key's last use as the object keeps it until the alarm has sent it. */
type LastUse = { at: number; method: AuthMethod; sent: boolean };

/** The verdict on a key at `now`, and the next instant (revocation or expiry) at which it could change. */
function judge(record: KeyRecord | undefined, now: number): Pick<KeyState, "verdict" | "until"> {
  const instants = [record?.key.revokedAt, record?.key.expiresAt].map((t) => (t ? Date.parse(t) : Infinity)).filter((t) => t > now);
  return { verdict: evaluateKey(record, new Date(now)), until: Math.min(...instants) };
}

export type Authorization =
  /**
   * `granted`: what the key's budget counted, and the lease beside it for the caller to spend; `relays`: where the
   * key's isolates call while it is spread (core/lease.ts, FanIn).
   */
  | { ok: true; principal: Principal; granted: Granted; relays?: Relays | null }
  | Extract<VerifyResult, { ok: false }>
  | { ok: false; refusal: Refusal }
  /** The first request with this `Idempotency-Key` is still being answered, or was another request. */
  | { ok: false; code: "idempotency_in_flight" | "idempotency_key_reused" }
  /** The hash names a key issued before ids were worked out from hashes: its object is `key:<keyId>`. */
  | { ok: false; code: "key_moved"; keyId: string };

/** What a call on a key asks of it, beside what it spends. */
export type KeyCall = {
  keyId: string;
  /** The key's hash, when the caller worked `keyId` out from it: a key issued before with this hash is found too. */
  hash?: string;
  method: AuthMethod;
  need: Need;
  ip?: string | null;
  anyAddress?: boolean;
};

/** How long a request's `Idempotency-Key` is remembered once it was charged. */
export const IDEMPOTENCY_MS = 24 * 3_600_000;

/** How long a request that is done once admitted counts as in flight, at most (it is marked done in the same step). */
const IN_FLIGHT_MS = 60_000;

/**
 * A remembered `Idempotency-Key`: charged, until when its first request may still be in flight, what that request was
 * (`fingerprint`) and its id (so that giving it back releases the key).
 */
type Charged = { pendingUntil: number; until: number; fingerprint: string; requestId: string };

// A key's record is trusted as any record an object read is (counters/trusted.ts): RECORD_TTL_MS at most, and
// UNSETTLED_TRUST_MS while a change to it may still land in D1.
export { RECORD_TTL_MS, UNSETTLED_TRUST_MS };

/**
 * One API key (`key:<id>`): its record and the verdict on it, its last use, and the sliding log of its own budget, so
 * that an authenticated request costs one call here and no D1 read.
 */
export class KeyObject extends DurableObject<Bindings> {
  /** Replaceable in tests to move time. */
  clock: () => number = Date.now;
  private readonly budget: Budget;
  /** The calls the key answers a second, through its relays too: whether its isolates are spread over relays. */
  readonly fanIn = new FanIn();
  /** The key as read from D1 (one, under its id), trusted as every object's records are (counters/trusted.ts). */
  private readonly keys: TrustedRecords<KeyState>;
  /** The key this object last judged (an object has one): what the test getters look at. */
  private keyId: string | undefined;
  /**
   * The bookmark of the last change that reloaded the key: its reads come from a copy of D1 that has caught up with it.
   * Kept in storage, so an instance that starts after the change (a deploy, an eviction) reads no older copy.
   */
  private bookmark: string | null;
  /** The key whose usage waits for the alarm, or null when none is set by this instance. */
  private flushing: string | null = null;
  /** The object's own D1 handle (deadline-wrapped); tests make it fail through test/faults.ts (`objectDatabase`). */
  database: D1Database;
  /** Where the key's usage and last use leave the object; tests make it fail through test/faults.ts (`faultyQueue`). */
  usageQueue: Queue<UsageMessage>;
  private readonly usage: UsageHistory;
  /** The balance's movements on their way to D1's ledger. */
  private readonly ledger: LedgerOutbox;
  /** What the key's limits and balance tell the account's webhook endpoints. */
  private readonly notices: Notices;

  constructor(ctx: DurableObjectState, env: Bindings) {
    super(ctx, env);
    this.database = withDeadline(env.DB, () => getConfig(env).d1TimeoutMs);
    this.usageQueue = env.USAGE;
    this.usage = new UsageHistory(ctx.storage.sql);
    this.ledger = new LedgerOutbox(ctx.storage.sql, () => this.clock());
    this.notices = new Notices(ctx, env);
    // Admissions given back come off the usage of the hour they were counted in.
    this.budget = new Budget(
      ctx.storage.sql,
      () => this.clock(),
      (at, cost) => this.usage.count(at, -cost, 0),
      {
        kv: ctx.storage.kv,
        record: (entries) => this.recordCredits(entries),
        // Credits paid back to a rotated key move on to its successor, once the step that paid them back is over.
        repaid: () => queueMicrotask(() => this.forward()),
      },
    );
    this.keys = new TrustedRecords(ctx.storage.kv, () => this.clock(), RECORD_TTL_MS, UNSETTLED_TRUST_MS, "distrust-until");
    this.bookmark = ctx.storage.kv.get<string>(BOOKMARK_KEY) ?? null;
  }

  /**
   * Checks the key and what the route needs of it, then spends `cost` requests of every limit it has, or what `costs`
   * names of those it names (the admit step, counters/budget.ts). A key that is refused (401) or falls short of the
   * route (403) or comes from an address its list does not allow (`ip`: the client's, null or absent when none is
   * known; 403 `ip_not_allowed`) spends nothing. A lease's renewal (`anyAddress`) serves no request of its own: each
   * request spending from the lease it brings is judged in its isolate, address included. A caller that
   * can hold a lease (`lease`) gets one when the key is hot (core/lease.ts), and gives back what its ended leases did
   * not spend (`returned`).
   */
  authorize({ keyId, hash, method, need, ip, anyAddress = false, ...call }: Spending & KeyCall): Promise<Authorization> {
    const { idempotency } = call;
    // What the judgement found, for the answer: the call spends only when it passed.
    let passed: { key: KeyState; principal: Principal; now: number } | undefined;
    return this.budget.admit<Authorization>(call, {
      judge: async () => {
        const key = await this.keyState(keyId, hash);
        if (key.movedTo !== undefined) return { refuse: { ok: false, code: "key_moved", keyId: key.movedTo } };
        const now = this.clock();
        if (now >= key.until) Object.assign(key, judge(key.record, now));
        if (!key.verdict.ok) return { refuse: key.verdict };
        const { principal } = key.verdict;
        const code = anyAddress ? refusal(principal, need) : keyRefusal(principal, need, ip);
        if (code) return { refuse: { ok: false, refusal: code } };
        passed = { key, principal, now };
        return { spend: principal.limits, credits: principal.credits.key };
      },
      // Checked and claimed in the step that spends: of concurrent requests with one key, one is charged, and a call
      // its caller gave up on claims nothing.
      claim: (judged) => {
        if (!idempotency) return judged;
        // A try of the call that claimed the key, refused at an object that restarted since: it spends nothing, and
        // the key is free for the request's retry.
        if ("refuse" in judged) {
          this.release(call.tag.id);
          return judged;
        }
        const now = this.clock();
        const charged = this.ctx.storage.kv.get<Charged>(`idempotency:${idempotency.key}`);
        // The call that claimed the key, tried again at an object that restarted since, is judged as that call.
        if (charged && charged.until > now && charged.requestId !== call.tag.id) {
          if (charged.fingerprint !== idempotency.fingerprint) return { refuse: { ok: false, code: "idempotency_key_reused" } };
          if (charged.pendingUntil > now) return { refuse: { ok: false, code: "idempotency_in_flight" } };
          return { spend: judged.spend, free: true };
        }
        // A request that is done once admitted (`pendingMs` 0) is in flight until then: a concurrent retry is refused
        // rather than let through before the first is known to be charged.
        this.ctx.storage.kv.put<Charged>(`idempotency:${idempotency.key}`, {
          pendingUntil: now + (idempotency.pendingMs || IN_FLIGHT_MS),
          until: now + IDEMPOTENCY_MS,
          fingerprint: idempotency.fingerprint,
          requestId: call.tag.id,
        });
        this.ctx.storage.kv.put(`idempotency-request:${call.tag.id}`, idempotency.key);
        return judged;
      },
      answer: (granted, logged) => {
        const { key, principal, now } = passed as NonNullable<typeof passed>;
        this.noteUse(keyId, key, method, now);
        for (const { at, cost } of logged) this.usage.count(at, cost, 0);
        if (!granted.allowed) this.usage.count(now, 0, 1);
        if (!granted.allowed && !granted.exhausted && key.record) {
          const refused = principal.limits.filter((l) => granted.refusedBy.includes(l.name));
          this.notices.limitRefused(principal.accountId, { key: keyEvent(key.record.key) }, refused, granted.retryAfter, now);
        }
        // A request refused here was not charged: its retry is charged as a first request.
        if (idempotency && !granted.replayed) {
          if (!granted.allowed) this.release(call.tag.id);
          else if (idempotency.pendingMs === 0) this.idempotent(idempotency.key, "kept");
        }
        this.flushLater(keyId);
        // Leases' rests this call brought back may belong to a successor.
        if (call.returned?.length) this.forward();
        // A key with a balance of its own is never spread: its leases carry credits, which relays do not carve.
        this.fanIn.note(now, call.relayed ?? 1);
        const spreadable = principal.credits.key === null && principal.limits.length > 0;
        const relays = spreadable ? this.fanIn.relays(now, Math.min(...principal.limits.map(leaseMs))) : null;
        return { ok: true, principal, granted, relays };
      },
    });
  }

  /**
   * The first request with this `Idempotency-Key` has its answer: `kept` (charged; a retry within 24 hours is not), or
   * `refunded` (what it spent was given back; a retry is charged as a first request).
   */
  idempotent(key: string, outcome: "kept" | "refunded"): void {
    const name = `idempotency:${key}`;
    const charged = this.ctx.storage.kv.get<Charged>(name);
    if (!charged) return;
    if (outcome === "refunded") this.release(charged.requestId);
    else this.ctx.storage.kv.put(name, { ...charged, pendingUntil: 0 });
    this.forgetIdempotency();
  }

  /**
   * The request `requestId` was given back (refused after its admission, its upstream failed, or its caller gave up):
   * the idempotency key it claimed is free again, so a retry is charged as a first request.
   */
  private release(requestId: string): void {
    const index = `idempotency-request:${requestId}`;
    const key = this.ctx.storage.kv.get<string>(index);
    if (key === undefined) return;
    this.ctx.storage.kv.delete(index);
    if (this.ctx.storage.kv.get<Charged>(`idempotency:${key}`)?.requestId === requestId) this.ctx.storage.kv.delete(`idempotency:${key}`);
  }

  /** Drops idempotency keys past their 24 hours. */
  private forgetIdempotency(): void {
    const now = this.clock();
    for (const [name, charged] of this.ctx.storage.kv.list<Charged>({ prefix: "idempotency:" }))
      if (charged.until <= now) {
        this.ctx.storage.kv.delete(name);
        this.ctx.storage.kv.delete(`idempotency-request:${charged.requestId}`);
      }
  }

  /** See Budget.cancel; an idempotency key the call claimed is released. */
  cancel(call: { tag: CallTag; returned?: Unspent[] }): void {
    this.budget.cancel(call);
    this.release(call.tag.id);
    this.forward();
  }

  /** See Budget.refund: the request was admitted but refused afterwards; an idempotency key it claimed is released. */
  refund(call: Refund): void {
    this.budget.refund(call);
    if (call.requestId !== undefined) this.release(call.requestId);
    this.forward();
  }

  /** The key's own credits as of now (null: unlimited); undefined when there is no such key. */
  async credits(keyId: string): Promise<CreditsView | undefined> {
    const config = await this.creditsConfig(keyId);
    return config === undefined ? undefined : this.balance.view(config, this.clock());
  }

  /** An admin's change to the key's own credits (see StoredBalance.adjust); undefined when there is no such key. */
  async adjustCredits(keyId: string, change: Adjustment): Promise<Adjusted | undefined> {
    const config = await this.creditsConfig(keyId);
    return config === undefined ? undefined : this.balance.adjust(config, this.clock(), change);
  }

  /** Empties the key's own credits into its successor's (see StoredBalance.drain); null when it has none. */
  async drainCredits(keyId: string, successor: string): Promise<number | null> {
    const config = await this.creditsConfig(keyId);
    if (config === undefined) return null;
    // What its requests still in flight give back later moves on too (`forward`).
    this.ctx.storage.kv.put("successor", successor);
    return this.balance.drain(config, this.clock(), `moved to ${successor} by rotation`);
  }

  /**
   * A rotated key's balance belongs to its successor: credits given back to it after the rotation (a refund, a
   * settle, a lease's rest) move on, each move a pair of ledger entries, so the old key never spends them in its grace
   * period. A move that fails is logged with its amount.
   */
  private forward(): void {
    const successor = this.ctx.storage.kv.get<string>("successor");
    const owner = this.ctx.storage.kv.get<{ keyId: string }>("ledger-owner");
    if (successor === undefined || !owner) return;
    const now = this.clock();
    const amount = this.balance.drain(undefined, now, `moved to ${successor} by rotation`);
    if (!amount) return;
    const change = { operation: "add" as const, amount, reason: `moved from ${owner.keyId} by rotation`, actor: "keygate" };
    this.ctx.waitUntil(
      this.env.KEYS.getByName(`key:${successor}`)
        .adjustCredits(successor, { ...change, idempotencyKey: `forward:${owner.keyId}:${now}` })
        .then((done) => {
          if (!done?.ok) throw new Error(done ? done.code : "no such key");
        })
        .catch((err: unknown) => log("error", "credits_not_moved", { from: owner.keyId, to: successor, amount, error: safeError(err) })),
    );
  }

  /**
   * Settles a request's reservation at what the upstream says it used (see StoredBalance.settle); nothing when the key
   * is not the account's.
   */
  async settleCredits(keyId: string, requestId: string, used: number, accountId?: string) {
    const { record } = await this.keyState(keyId);
    if (!record || (accountId !== undefined && record.key.accountId !== accountId)) return null;
    const settled = this.balance.settle(storedCredits(record.key.credits), this.clock(), requestId, used);
    this.forward();
    return settled;
  }

  private get balance() {
    // The key object always keeps a balance (the constructor passes its storage).
    return this.budget.balance as NonNullable<Budget["balance"]>;
  }

  /** The key's credits configuration, or undefined when the key does not exist. */
  private async creditsConfig(keyId: string) {
    const { record } = await this.keyState(keyId);
    if (!record) return undefined;
    return storedCredits(record.key.credits);
  }

  /**
   * Keeps the balance's movements for the ledger, in the same step as the movement, and counts the credits spent in
   * the hour's usage; the alarm writes both to D1.
   */
  private recordCredits(entries: readonly LedgerEntry[]): void {
    // Kept in storage when the key was first read (a balance opens only after): a refund may reach an object evicted
    // since, before it has read its key again.
    const owner = this.ctx.storage.kv.get<LedgerOwner & { keyId: string }>("ledger-owner");
    if (!owner) {
      log("error", "ledger_owner_unknown", { entries: entries.length });
      return;
    }
    this.ledger.record(owner, entries);
    this.notices.balanceMoved(owner.accountId, { balance: "key", keyId: owner.keyId }, entries);
    for (const e of entries)
      if (e.kind === "spend" || e.kind === "refund" || e.kind === "reserve" || e.kind === "settle") this.usage.count(e.at, 0, 0, -e.delta);
    this.flushLater(owner.keyId);
  }

  /** Writes the usage counted since the last write to D1, at most once per FLUSH_INTERVAL_MS (the alarm). */
  private flushLater(keyId: string): void {
    if (this.flushing !== null) return;
    this.flushing = keyId;
    this.ctx.waitUntil(
      this.ctx.storage
        .getAlarm()
        .then((at) =>
          at === null
            ? this.ctx.storage.put("usage-key", keyId).then(() => this.ctx.storage.setAlarm(this.clock() + FLUSH_INTERVAL_MS))
            : undefined,
        ),
    );
  }

  override async alarm(): Promise<void> {
    this.flushing = null;
    const keyId = await this.ctx.storage.get<string>("usage-key");
    if (keyId === undefined) return;
    try {
      if (this.ledger.pending()) await this.ledger.flush(this.database);
      await this.sendUsage(keyId);
      // A long backlog drains over several flushes.
      if (this.ledger.pending()) this.flushLater(keyId);
    } catch (err) {
      log("error", "usage_flush_failed", { keyId, error: safeError(err) });
      await this.ctx.storage.setAlarm(this.clock() + FLUSH_INTERVAL_MS);
    }
  }

  /**
   * Sends the hours that changed and the last use, if it moved, on the usage queue (src/usage/queue.ts): one message.
   * What is sent is marked only once the queue took it; what fails stays for the next alarm.
   */
  private async sendUsage(keyId: string): Promise<void> {
    const hours = this.usage.unsent();
    const lastUse = this.ctx.storage.kv.get<LastUse>("last-use");
    const use = lastUse && !lastUse.sent ? { at: new Date(lastUse.at).toISOString(), method: lastUse.method } : undefined;
    if (hours.length === 0 && !use) return;
    const owner = this.ctx.storage.kv.get<LedgerOwner>("ledger-owner");
    const accountId = owner?.accountId ?? (await this.keyState(keyId)).record?.key.accountId;
    if (accountId === undefined) return;
    await this.usageQueue.send({ usage: { keyId, accountId, hours, ...(use ? { lastUse: use } : {}) } });
    this.usage.sent(hours);
    this.usage.prune(this.clock());
    // Sent as it was: a later use recorded meanwhile stays to be sent.
    if (lastUse && this.ctx.storage.kv.get<LastUse>("last-use")?.at === lastUse.at)
      this.ctx.storage.kv.put("last-use", { ...lastUse, sent: true });
  }

  /** The key's hours in [from, to) (`from` an hour's start), as counted: exact, and as of now. */
  usageHours(from: string, to: string): UsageHour[] {
    return this.usage.hours(from, to);
  }

  /** When the key's last use was last recorded (ms since epoch), for tests: what `noteUse` goes by. */
  get lastUseRecorded(): number | undefined {
    return this.keyId === undefined ? undefined : this.keys.peek(this.keyId)?.lastUsed;
  }

  /** Whether the object holds the key's record (its read of D1 has landed), for tests. */
  get holdsRecord(): boolean {
    return this.keyId !== undefined && this.keys.peek(this.keyId) !== undefined;
  }

  /**
   * Drops the cached key: the next request reads the key, its owner and its account again, from a copy of D1 that has
   * caught up with `bookmark` (the change's, when its caller hands it on).
   */
  reload(bookmark?: string | null): void {
    if (bookmark) {
      this.bookmark = bookmark;
      this.ctx.storage.kv.put(BOOKMARK_KEY, bookmark);
    }
    this.keys.reload();
  }

  /**
   * A change to the key's rights was made but not known to be in force here (its reload failed, or D1 did not answer
   * its write in time, which may still land): drops the cached key, and trusts a record read in the next `ms` for
   * UNSETTLED_TRUST_MS at most, so the change is in force soon after it lands. Kept in storage, so eviction forgets
   * nothing.
   */
  distrust(ms: number): void {
    this.keys.distrust(ms);
  }

  /**
   * Keeps the key's last use at most once per LAST_USED_INTERVAL_MS (or when the method changes), for the alarm to send
   * with the usage: no write anywhere per request.
   */
  private noteUse(keyId: string, key: KeyState, method: AuthMethod, now: number): void {
    if (now - key.lastUsed < LAST_USED_INTERVAL_MS && key.lastMethod === method) return;
    key.lastUsed = now;
    key.lastMethod = method;
    this.ctx.storage.kv.put("last-use", { at: now, method, sent: false } satisfies LastUse);
    this.flushLater(keyId);
  }

  /**
   * The key, its owner and its account, read from D1 when the object trusts no record of them. With `hash` (the id was
   * worked out from it), a key issued before with that hash is found in the same read.
   */
  private keyState(keyId: string, hash?: string): Promise<KeyState> {
    this.keyId = keyId;
    return this.keys.get(keyId, async () => {
      const loadedAt = this.clock();
      // While a change may still land, from the primary (it may land after any bookmark); else from the nearest copy
      // that has the last change seen.
      const reads = this.keys.unsettled() ? session(this.database, null, "first-primary") : session(this.database, this.bookmark);
      const found = await loadKey(db(reads), { id: keyId, hash }).catch((err: unknown) => {
        // Only what may be logged crosses back to the worker: drizzle's error names the query and its parameters.
        throw new Error(safeError(err));
      });
      // Found by its hash under another id: a key issued before, whose object is that id's, not this one.
      const movedTo = found && found.key.id !== keyId ? found.key.id : undefined;
      const record = movedTo === undefined ? found : undefined;
      if (record && this.ctx.storage.kv.get("ledger-owner") === undefined)
        this.ctx.storage.kv.put("ledger-owner", { accountId: record.key.accountId, keyId: record.key.id });
      return {
        record,
        ...(movedTo === undefined ? {} : { movedTo }),
        ...judge(record, loadedAt),
        // What D1 has, or a later use this object keeps until the alarm sends it.
        lastUsed: Math.max(
          record?.key.lastUsedAt ? Date.parse(record.key.lastUsedAt) : 0,
          this.ctx.storage.kv.get<LastUse>("last-use")?.at ?? 0,
        ),
        lastMethod: record?.key.lastAuthMethod ?? null,
      };
    });
  }
}
