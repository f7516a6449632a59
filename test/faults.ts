/**
 * The one fault-injection seam of the tests: wraps a real Durable Object namespace or a real D1 database so that chosen
 * calls throw, stall, arrive late or answer late, while every other call reaches the real thing. Tests pass the
 * wrapped binding to `callWith`, so the worker under test is the real one and only the fault is made up.
 */

export type Fault =
  /** Fails at once (like a reset or a lost connection); `times` limits it to the first calls. */
  | { kind: "throw"; error?: Error; times?: number }
  /** Never answers. */
  | { kind: "stall" }
  /** Reaches the real object only after `ms` (a call stuck in a queue). */
  | { kind: "late-call"; ms: number }
  /** Reaches the real object at once, but its answer comes back only after `ms`. */
  | { kind: "late-answer"; ms: number };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Settles `real()` the way the fault says. `count` is how many calls this fault has seen before this one. */
async function apply<T>(fault: Fault, count: number, real: () => Promise<T>): Promise<T> {
  switch (fault.kind) {
    case "throw":
      if (fault.times !== undefined && count >= fault.times) return real();
      throw fault.error ?? new Error("injected fault");
    case "stall":
      return new Promise<T>(() => {});
    case "late-call":
      await sleep(fault.ms);
      return real();
    case "late-answer": {
      const answer = await real();
      await sleep(fault.ms);
      return answer;
    }
  }
}

/** A namespace whose objects suffer `faults[method]` on those methods; `calls(method)` counts the calls made. */
export function faultyObjects<T extends Rpc.DurableObjectBranded | undefined>(
  namespace: DurableObjectNamespace<T>,
  faults: Record<string, Fault>,
): DurableObjectNamespace<T> & { calls: (method: string) => number } {
  const counts = new Map<string, number>();
  const calls = (method: string) => counts.get(method) ?? 0;
  const stub = (real: DurableObjectStub<T>) =>
    new Proxy(real, {
      get(target, prop) {
        const value = Reflect.get(target, prop);
        if (typeof prop !== "string" || typeof value !== "function") return value;
        return (...args: unknown[]) => {
          const count = calls(prop);
          counts.set(prop, count + 1);
          const fault = faults[prop];
          const forward = () => Promise.resolve(Reflect.apply(value, target, args));
          return fault ? apply(fault, count, forward) : forward();
        };
      },
    });
  return new Proxy(namespace, {
    get(target, prop) {
      if (prop === "calls") return calls;
      const value = Reflect.get(target, prop);
      if (prop === "getByName" || prop === "get") return (...args: unknown[]) => stub(value.apply(target, args));
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as DurableObjectNamespace<T> & { calls: (method: string) => number };
}

/** A database whose statements (and batches) matching `when` suffer the fault; the others reach the real D1. */
export function faultyDatabase(db: D1Database, fault: Fault, when: (sql: string) => boolean = () => true): D1Database {
  let count = 0;
  const known = new WeakMap<object, { real: D1PreparedStatement; sql: string }>();
  const faulted = <T>(sql: string, run: () => Promise<T>) => (when(sql) ? apply(fault, count++, run) : run());
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
    get(target, prop) {
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
  });
}
