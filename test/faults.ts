/**
 * The one fault-injection seam of the tests: wraps a real Durable Object namespace or a real D1 database so that chosen
 * calls throw, stall, arrive late or answer late, while every other call reaches the real thing. Tests pass the
 * wrapped binding to `callWith`, so the worker under test is the real one and only the fault is made up. A key's object
 * reads D1 through its own handle: `objectDatabase` replaces that one.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import type { AccountObject } from "../src/counters/account-object";
import type { KeyObject } from "../src/keys/object";

export type Fault =
  /**
   * Fails at once (like a reset or a lost connection); `times` limits it to the first calls; `meanwhile` runs as it
   * fails (what happened elsewhere before its caller learns of it, such as another request's answer).
   */
  | { kind: "throw"; error?: Error; times?: number; meanwhile?: () => void }
  /** Never answers. */
  | { kind: "stall" }
  /** Reaches the real object only after `ms` (a call stuck in a queue); `times` limits it to the first calls. */
  | { kind: "late-call"; ms: number; times?: number }
  /** Reaches the real thing only once `until` settles: the test does what it must meanwhile, then lets the call go. */
  | { kind: "held"; until: Promise<void> }
  /** Reaches the real thing at once, but its answer comes back only once `until` settles. */
  | { kind: "held-answer"; until: Promise<void> }
  /** Reaches the real object at once, but its answer comes back only after `ms`; `times` limits it to the first calls. */
  | { kind: "late-answer"; ms: number; times?: number }
  /**
   * Reaches the real thing, which does the work, then fails (the answer was lost); `times` limits it to the first
   * calls; `meanwhile` runs as it fails, as with `throw`.
   */
  | { kind: "lost-answer"; error?: Error; times?: number; meanwhile?: () => void };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Settles `real()` the way the fault says. `count` is how many calls this fault has seen before this one. */
async function apply<T>(fault: Fault, count: number, real: () => Promise<T>): Promise<T> {
  if ("times" in fault && fault.times !== undefined && count >= fault.times) return real();
  switch (fault.kind) {
    case "throw":
      fault.meanwhile?.();
      throw fault.error ?? new Error("injected fault");
    case "stall":
      return new Promise<T>(() => {});
    case "late-call":
      await sleep(fault.ms);
      return real();
    case "held":
      await fault.until;
      return real();
    case "held-answer": {
      const answer = await real();
      await fault.until;
      return answer;
    }
    case "late-answer": {
      const answer = await real();
      await sleep(fault.ms);
      return answer;
    }
    case "lost-answer":
      await real();
      fault.meanwhile?.();
      throw fault.error ?? new Error("injected fault after the call landed");
  }
}

/** What a test can wait for instead of sleeping: a method's first call, and the end of every call made so far. */
export type Observed = {
  /** How many calls of `method` were made. */
  calls: (method: string) => number;
  /** Resolves once `method` has been called (its fault, if any, has begun). */
  reached: (method: string) => Promise<void>;
  /** Resolves once every call made so far has settled, faults included (a late call has reached the object). */
  settled: () => Promise<void>;
};

/** A namespace whose objects suffer `faults[method]` on those methods; every other call reaches the real object. */
export function faultyObjects<T extends Rpc.DurableObjectBranded | undefined>(
  namespace: DurableObjectNamespace<T>,
  faults: Record<string, Fault>,
): DurableObjectNamespace<T> & Observed {
  const counts = new Map<string, number>();
  const waiting = new Map<string, () => void>();
  const pending: Promise<unknown>[] = [];
  const calls = (method: string) => counts.get(method) ?? 0;
  const reached = (method: string) =>
    calls(method) > 0 ? Promise.resolve() : new Promise<void>((resolve) => waiting.set(method, resolve));
  // A stalled call never settles: it is not waited for.
  const settled = async () => {
    await Promise.allSettled(pending);
  };
  const stub = (real: DurableObjectStub<T>) =>
    new Proxy(real, {
      get(target, prop) {
        const value = Reflect.get(target, prop);
        if (typeof prop !== "string" || typeof value !== "function") return value;
        return (...args: unknown[]) => {
          const count = calls(prop);
          counts.set(prop, count + 1);
          waiting.get(prop)?.();
          const fault = faults[prop];
          const forward = () => Promise.resolve(Reflect.apply(value, target, args));
          const result = fault ? apply(fault, count, forward) : forward();
          if (fault?.kind !== "stall") pending.push(result);
          return result;
        };
      },
    });
  return new Proxy(namespace, {
    get(target, prop) {
      if (prop === "calls") return calls;
      if (prop === "reached") return reached;
      if (prop === "settled") return settled;
      const value = Reflect.get(target, prop);
      if (prop === "getByName" || prop === "get") return (...args: unknown[]) => stub(value.apply(target, args));
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as DurableObjectNamespace<T> & Observed;
}

/** A database whose statements (and batches) matching `when` suffer the fault; the others reach the real D1. */
export function faultyDatabase(
  db: D1Database,
  fault: Fault,
  when: (sql: string) => boolean = () => true,
): D1Database & { reached: () => Promise<void> } {
  let count = 0;
  let arrive: () => void = () => {};
  const arrived = new Promise<void>((resolve) => {
    arrive = resolve;
  });
  const known = new WeakMap<object, { real: D1PreparedStatement; sql: string }>();
  const faulted = <T>(sql: string, run: () => Promise<T>) => {
    if (!when(sql)) return run();
    arrive();
    return apply(fault, count++, run);
  };
  const statement = (s: D1PreparedStatement, sql: string): D1PreparedStatement => {
    const wrapped = new Proxy(s, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (typeof value !== "function") return value;
        if (prop === "bind") return (...args: unknown[]) => statement(value.apply(target, args), sql);
        if (["first", "run", "all", "raw"].includes(prop as string))
          return (...args: unknown[]) => faulted(sql, () => value.apply(target, args));
        return value.bind(target);
      },
    });
    known.set(wrapped, { real: s, sql });
    return wrapped;
  };
  return new Proxy(db, {
    get(target, prop, receiver) {
      // A session of it (the Sessions API, as Keygate reads) suffers the same faults.
      if (prop === "withSession") return () => receiver;
      if (prop === "getBookmark") return () => null;
      if (prop === "reached") return () => arrived;
      if (prop === "prepare") return (sql: string) => statement(target.prepare(sql), sql);
      if (prop === "batch") {
        return (list: D1PreparedStatement[]) => {
          const sql = list.map((s) => known.get(s)?.sql ?? "").join(";\n");
          return faulted(sql, () => target.batch(list.map((s) => known.get(s)?.real ?? s)));
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as D1Database & { reached: () => Promise<void> };
}

/** Each distinct statement a `recordingDatabase` saw run, by its SQL text, with the parameters of its first run. */
export type Recorded = Map<string, unknown[]>;

/**
 * A database that notes every statement it runs (alone or in a batch) in `seen`, and runs it on the real D1: nothing
 * is made up, so what the worker answers is what it always answers. Recorded when run, not when prepared: a statement
 * prepared and never sent costs the database nothing.
 */
export function recordingDatabase(db: D1Database, seen: Recorded): D1Database {
  const known = new WeakMap<object, { real: D1PreparedStatement; sql: string; params: unknown[] }>();
  const note = (sql: string, params: unknown[]) => {
    if (!seen.has(sql)) seen.set(sql, params);
  };
  const statement = (s: D1PreparedStatement, sql: string, params: unknown[]): D1PreparedStatement => {
    const wrapped = new Proxy(s, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (typeof value !== "function") return value;
        if (prop === "bind") return (...args: unknown[]) => statement(value.apply(target, args), sql, args);
        if (["first", "run", "all", "raw"].includes(prop as string))
          return (...args: unknown[]) => {
            note(sql, params);
            return value.apply(target, args);
          };
        return value.bind(target);
      },
    });
    known.set(wrapped, { real: s, sql, params });
    return wrapped;
  };
  return new Proxy(db, {
    get(target, prop, receiver) {
      // A session of it (the Sessions API, as Keygate reads) is recorded too.
      if (prop === "withSession") return () => receiver;
      if (prop === "getBookmark") return () => null;
      if (prop === "prepare") return (sql: string) => statement(target.prepare(sql), sql, []);
      if (prop === "batch") {
        return (list: D1PreparedStatement[]) => {
          for (const s of list) {
            const k = known.get(s);
            if (k) note(k.sql, k.params);
          }
          return target.batch(list.map((s) => known.get(s)?.real ?? s));
        };
      }
      if (prop === "exec")
        return (sql: string) => {
          note(sql, []);
          return target.exec(sql);
        };
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/**
 * Makes a key's object (or a person's, `user:<id>` in ACCOUNTS) use `make()` as its D1 (a `faultyDatabase`, made inside
 * the object: what the object uses must belong to its own context) through its documented seam, `database`, and drops
 * its records so its next call reads D1 again, unless `keep` (then it goes on with what it already knows). Answers the
 * undo, which gives the object its own handle back (and drops its records again).
 */
export async function objectDatabase(
  stub: DurableObjectStub<KeyObject> | DurableObjectStub<AccountObject>,
  make: () => D1Database,
  { keep = false } = {},
): Promise<() => Promise<void>> {
  let own: D1Database | undefined;
  const seam = stub as DurableObjectStub<KeyObject>;
  await runInDurableObject(seam, (instance) => {
    own = instance.database;
    instance.database = make();
    if (!keep) instance.reload();
  });
  return () =>
    runInDurableObject(seam, (instance) => {
      instance.database = own as D1Database;
      instance.reload();
    });
}

/**
 * Makes an object read the real database through its seam (its instance kept), recording the constraint or bookmark
 * each of its D1 sessions is opened with (local D1 has no replicas, so each reads the one copy there is); answers what
 * was asked, and the undo.
 */
export async function objectSessions(
  stub: DurableObjectStub<KeyObject> | DurableObjectStub<AccountObject>,
): Promise<{ asked: string[]; restore: () => Promise<void> }> {
  const asked: string[] = [];
  const recording = () =>
    new Proxy(env.DB, {
      get(target, prop) {
        if (prop === "withSession")
          return (constraint: string) => {
            asked.push(constraint);
            return target.withSession("first-unconstrained");
          };
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  return { asked, restore: await objectDatabase(stub, recording, { keep: true }) };
}

/**
 * Makes a key's object send its usage through `make()` (a `faultyQueue`, made inside the object) through its seam,
 * `KeyObject.usageQueue`. Answers the undo.
 */
export async function objectQueue(stub: DurableObjectStub<KeyObject>, make: () => Queue): Promise<() => Promise<void>> {
  let own: Queue | undefined;
  await runInDurableObject(stub, (instance) => {
    own = instance.usageQueue;
    instance.usageQueue = make();
  });
  return () =>
    runInDurableObject(stub, (instance) => {
      instance.usageQueue = own as Queue;
    });
}

/** A queue whose `send` and `sendBatch` suffer the fault (the queue is down); the messages never arrive. */
export function faultyQueue(queue: Queue, fault: Fault): Queue {
  let count = 0;
  return new Proxy(queue, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (prop === "send" || prop === "sendBatch") return (...args: unknown[]) => apply(fault, count++, () => value.apply(target, args));
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
