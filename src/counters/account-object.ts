import { DurableObject } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import type { LedgerEntry } from "../core/balance";
import type { AccountLimits } from "../core/ceilings";
import type { CreditsConfig } from "../core/credits";
import { type Need, perPerson, poolOf, type Refusal, refusal, sharedLimits } from "../core/principal";
import type { Limit } from "../core/window";
import { getConfig } from "../platform/config";
import { type Db, db, session, withDeadline } from "../platform/db/client";
import { accountLimitColumns, accounts, plans } from "../platform/db/schema";
import type { Bindings } from "../platform/env";
import { log, safeError } from "../platform/log";
import { Budget } from "./budget";
import { LedgerOutbox } from "./ledger";
import { Notices } from "./notices";
import type { CallTag, Granted, Refund, Spending, Unspent } from "./protocol";
import { type HourTotal, type KeyHour, type KeyTotal, UsageRollup } from "./rollup";
import { PersonSessions, type SessionClaim, type SessionEnded, type SessionHolder, type SessionUse } from "./sessions";
import type { Adjusted, Adjustment, CreditsView } from "./stored-balance";
import { BOOKMARK_KEY, RECORD_TTL_MS, UNSETTLED_TRUST_MS } from "./trusted";

/** How long the pool's movements wait to reach D1 together: the ledger is written per minute, not per request. */
const LEDGER_FLUSH_MS = 60_000;

/** Longest time the account's limits and credits configuration is trusted without a read; changes reload it at once. */
const CONFIG_TTL_MS = 60_000;

/**
 * A person's budget, as their principal carries it (a person's object reads nothing itself): the limits each person of
 * the account has (`shared: "user"`) and their balance (`userCredits`).
 */
export type Person = { userId: string; limits: Limit[]; credits: CreditsConfig | null };

/** Whose balance a call names: the account's pool, or one person's (`person`, with what their balance opens with). */
export type BalanceOwner = { accountId: string; person?: Pick<Person, "userId" | "credits"> };

/** The account's spend: admitted or refused on its shared limits and pool, or no such account (nothing spent). */
export type PoolAnswer = { ok: true; record: null; granted: Granted } | { ok: false; code: "invalid_key" };

/**
 * A session's request as its person's object answers it: admitted or refused by the person's limits, under the holder
 * it was judged by; or the session no longer works; or the person falls short of what the route needs (nothing spent).
 */
export type SessionAnswer = { ok: true; record: SessionHolder; granted: Granted } | SessionEnded | SessionRefused;

/** The person falls short of what the route needs (who they are comes with it: a page shows them its refusal). */
export type SessionRefused = { ok: false; refusal: Refusal; holder: SessionHolder };

/**
 * One account (`account:<id>`): the limits its keys and people share (`shared: "account"`) and its credits pool,
 * spent beside each key's own in the same admit step as a key's object (counters/budget.ts), leases included, so a
 * hot account spread over many isolates costs a fraction of a call per request. A person (`user:<id>`) has an object
 * of the same kind: the limits each person has and their balance, spent by all their keys and sessions together, and
 * the judge of their sessions (`admitSession`).
 *
 * One object per person, not per session: what a session's request spends (the person's own limits, shared by all
 * their sessions, and their balance) is the person's, so judging the session where it spends costs one call (or a
 * lease, none); and the changes that end sessions or narrow rights are a person's (disabling, a password change, new
 * grants, logging out), so each is told to one object, however many sessions the person has.
 */
export class AccountObject extends DurableObject<Bindings> {
  /** Replaceable in tests to move time. */
  clock: () => number = Date.now;
  private readonly budget: Budget;
  private config: { pool: AccountLimits | undefined; loadedAt: number } | undefined;
  private loading: Promise<AccountLimits | undefined> | null = null;
  private generation = 0;
  /**
   * The bookmark of the last change that reloaded the account (or the person): its reads come from a copy of D1 caught
   * up with it. Kept in storage, so an instance that starts after the change reads no older copy.
   */
  private bookmark: string | null;
  /** The object's own D1 handle (deadline-wrapped); tests make it fail through test/faults.ts. */
  database: D1Database;
  /** The pool's movements on their way to D1's ledger, and whether the alarm that writes them is set. */
  private readonly ledger: LedgerOutbox;
  private flushing = false;
  /** What the pool (or the person's balance) tells the account's webhook endpoints. */
  private readonly notices: Notices;
  /** The account's usage: its keys' hours, as their objects send them (through the usage queue). */
  private readonly rollup: UsageRollup;
  /** A person's object: their sessions, judged with no D1 read once known. */
  private readonly sessions: PersonSessions;
  /** Where a person's sessions' last uses leave the object; tests make it fail through test/faults.ts (`faultyQueue`). */
  usageQueue: Queue<SessionUse>;

  constructor(ctx: DurableObjectState, env: Bindings) {
    super(ctx, env);
    this.database = withDeadline(env.DB, () => getConfig(env).d1TimeoutMs);
    this.bookmark = ctx.storage.kv.get<string>(BOOKMARK_KEY) ?? null;
    this.ledger = new LedgerOutbox(ctx.storage.sql, () => this.clock());
    this.notices = new Notices(ctx, env);
    this.rollup = new UsageRollup(ctx.storage.sql);
    this.usageQueue = env.USAGE;
    this.sessions = new PersonSessions(
      ctx.storage.kv,
      () => this.clock(),
      // While a change may still land, from the primary (it may land after any bookmark); else from a copy of D1 that
      // has caught up with the last change that reloaded the person.
      () => (this.sessions.unsettled() ? session(this.database, null, "first-primary") : session(this.database, this.bookmark)),
      () => this.usageQueue,
      (p) => ctx.waitUntil(p),
      RECORD_TTL_MS,
      UNSETTLED_TRUST_MS,
    );
    this.budget = new Budget(ctx.storage.sql, () => this.clock(), undefined, {
      kv: ctx.storage.kv,
      record: (entries) => this.recordCredits(entries),
    });
  }

  /**
   * Spends the request's cost of the account's shared limits and its credits from the pool: all, or nothing. A person's
   * object (`person`) spends the limits each person has and their balance, as their principal carries them.
   */
  spend({ accountId, person, ...call }: Spending & { accountId: string; person?: Person }): Promise<PoolAnswer> {
    return this.budget.admit<PoolAnswer>(call, {
      judge: async () => {
        if (person) {
          this.own(accountId, person.userId);
          return { spend: person.limits, credits: person.credits };
        }
        const pool = await this.pool(accountId);
        if (!pool) return { refuse: { ok: false, code: "invalid_key" } };
        return { spend: sharedLimits(pool), credits: poolOf(pool) };
      },
      answer: (granted) => ({ ok: true, record: null, granted }),
    });
  }

  /**
   * A person's request with one of their sessions (an access token, or the dashboard's cookie with its `proof`): the
   * session works and the person's rights, as they are now, meet `need`; then it spends `cost` of the person's own
   * limits (those of the account's defaults each session has, one budget for all the person's sessions), of the limits
   * the account gives each person (`shared: "user"`) and of their balance, all in one step, leased as a key's are.
   * Refused, it spends nothing.
   */
  admitSession({ need, ...call }: Spending & SessionClaim & { need: Need }): Promise<SessionAnswer> {
    let holder: SessionHolder | undefined;
    return this.budget.admit<SessionAnswer>(call, {
      judge: async () => {
        const verdict = await this.sessions.judge(call);
        if (!verdict.ok) return { refuse: verdict };
        const { principal } = verdict.holder;
        const short = refusal(principal, need);
        if (short) return { refuse: { ok: false, refusal: short, holder: verdict.holder } };
        this.own(principal.accountId, principal.userId);
        holder = verdict.holder;
        return { spend: [...principal.limits, ...perPerson(principal)], credits: principal.credits.user };
      },
      answer: (granted) => {
        this.sessions.used(call.sessionId);
        return { ok: true, record: holder as SessionHolder, granted };
      },
    });
  }

  /**
   * A change to the person: `ended` sessions are refused from now on with no read, and the person and their other
   * sessions are read again on their next request (their role, grants, state and account as the change left them).
   */
  changed(ended: string[] = [], bookmark?: string | null): void {
    this.sessions.end(ended);
    this.reload(bookmark);
  }

  /**
   * A change to the person was made but is not known to be in D1 yet (it may still land): what is read in the next
   * `ms` is trusted UNSETTLED_TRUST_MS at most (see KeyObject.distrust).
   */
  distrust(ms: number): void {
    this.sessions.distrust(ms);
    this.reload();
  }

  /** See Budget.cancel. */
  cancel(call: { tag: CallTag; returned?: Unspent[] }): void {
    this.budget.cancel(call);
  }

  /** See Budget.refund. */
  refund(call: Refund): void {
    this.budget.refund(call);
  }

  /** The balance as of now (null: unlimited); undefined when there is no such account. */
  async credits(owner: BalanceOwner): Promise<CreditsView | undefined> {
    const config = await this.balanceOf(owner);
    return config && this.balance.view(config.credits, this.clock());
  }

  /** A change to the balance (see StoredBalance.adjust); undefined when there is no such account. */
  async adjustCredits(owner: BalanceOwner, change: Adjustment): Promise<Adjusted | undefined> {
    const config = await this.balanceOf(owner);
    return config && this.balance.adjust(config.credits, this.clock(), change);
  }

  /** Settles a request's reservation at what the upstream says it used (see StoredBalance.settle). */
  async settleCredits(owner: BalanceOwner, requestId: string, used: number) {
    const config = await this.balanceOf(owner);
    return config ? this.balance.settle(config.credits, this.clock(), requestId, used) : null;
  }

  /** Keeps the keys' hours as their objects sent them (see UsageRollup). */
  recordUsage(hours: KeyHour[]): void {
    this.rollup.record(hours, this.clock());
  }

  /** The account's hours in [from, to) and each key's totals over them (`keyIds`: only those keys; null: all). */
  usage(from: string, to: string, keyIds: string[] | null): { series: HourTotal[]; keys: KeyTotal[] } {
    return { series: this.rollup.series(from, to, keyIds), keys: this.rollup.totals(from, to, keyIds) };
  }

  /**
   * Reads the account's configuration again (a person's object: the person and their sessions): a change to its limits,
   * credits or plan is in force on the next request, read from a copy of D1 that has caught up with `bookmark` (the
   * change's).
   */
  reload(bookmark?: string | null): void {
    if (bookmark) {
      this.bookmark = bookmark;
      this.ctx.storage.kv.put(BOOKMARK_KEY, bookmark);
    }
    this.generation += 1;
    this.config = undefined;
    this.loading = null;
    this.sessions.reload();
  }

  private get balance() {
    // The account object always keeps a balance (the constructor passes its storage).
    return this.budget.balance as NonNullable<Budget["balance"]>;
  }

  /** The balance's configuration: the person's, as given, else the account pool's; undefined: no such account. */
  private async balanceOf({ accountId, person }: BalanceOwner): Promise<{ credits: CreditsConfig | null } | undefined> {
    if (person) {
      this.own(accountId, person.userId);
      return person;
    }
    const pool = await this.pool(accountId);
    return pool && { credits: poolOf(pool) };
  }

  /** Its ledger entries name the account (and the person): kept once, as the object's name is not known to it. */
  private own(accountId: string, userId?: string): void {
    const kv = this.ctx.storage.kv;
    if (kv.get<string>("account-id") === undefined) kv.put("account-id", accountId);
    if (userId !== undefined && kv.get<string>("user-id") === undefined) kv.put("user-id", userId);
  }

  private async pool(accountId: string): Promise<AccountLimits | undefined> {
    this.own(accountId);
    if (this.config && this.clock() - this.config.loadedAt < CONFIG_TTL_MS) return this.config.pool;
    if (!this.loading) {
      // Concurrent requests share one read; a reload during the read discards its result.
      const generation = this.generation;
      const loadedAt = this.clock();
      this.loading = loadPool(db(session(this.database, this.bookmark)), accountId).then(
        (pool) => {
          if (generation === this.generation) {
            this.config = { pool, loadedAt };
            this.loading = null;
          }
          return pool;
        },
        (err: unknown) => {
          if (generation === this.generation) this.loading = null;
          // Only what may be logged crosses back to the worker: drizzle's error names the query and its parameters.
          throw new Error(safeError(err));
        },
      );
    }
    return this.loading;
  }

  /** Keeps the pool's movements for the ledger, in the same step as the movement; the alarm writes them to D1. */
  private recordCredits(entries: readonly LedgerEntry[]): void {
    const accountId = this.ctx.storage.kv.get<string>("account-id");
    if (accountId === undefined) return;
    const userId = this.ctx.storage.kv.get<string>("user-id") ?? null;
    this.ledger.record({ accountId, keyId: null, userId }, entries);
    this.notices.balanceMoved(accountId, userId === null ? { balance: "account" } : { balance: "user", userId }, entries);
    if (!this.flushing) {
      this.flushing = true;
      this.ctx.waitUntil(
        this.ctx.storage.getAlarm().then((at) => (at === null ? this.ctx.storage.setAlarm(this.clock() + LEDGER_FLUSH_MS) : undefined)),
      );
    }
  }

  /** Writes the pool's movements to D1's ledger; what D1 refuses or does not take in time waits for the next alarm. */
  override async alarm(): Promise<void> {
    this.flushing = false;
    if (!this.ledger.pending()) return;
    try {
      await this.ledger.flush(this.database);
    } catch (err) {
      log("error", "ledger_flush_failed", { counter: "account", error: safeError(err) });
    }
    if (this.ledger.pending()) {
      this.flushing = true;
      await this.ctx.storage.setAlarm(this.clock() + LEDGER_FLUSH_MS);
    }
  }
}

/** What an account's object counts for every request of the account: its limits and credits, and its plan's; undefined: no such account. */
async function loadPool(d: Db, id: string): Promise<AccountLimits | undefined> {
  const [found] = await d
    .select(accountLimitColumns)
    .from(accounts)
    .leftJoin(plans, eq(plans.id, accounts.planId))
    .where(eq(accounts.id, id))
    .limit(1);
  return found;
}
