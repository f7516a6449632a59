// Bench-only entry around the built worker.
// - With `X-Bench-Count: 1`, counts the D1 round trips and Durable Object calls a request makes before its response,
//   and reports them in `X-Bench-Counts` (`do` all of them, and `key`, `relay`, `account`, `counter` by kind of object).
// - In an isolate given the binding BENCH_DO_RTT_MS (the far-away counter), every Durable Object call of every request
//   takes that simulated round trip (half on the way there, half on the way back) and is counted, as are the requests;
//   `GET /__bench/do-calls` answers how many of each this isolate has seen so far.
// - In any isolate, requests with `X-Bench-Tally: 1` are counted, with the Durable Object calls they make by kind of
//   object (calls made after the answer, such as a lease's renewal in the background, included); `GET /__bench/tally`
//   answers how many of each this isolate has seen so far.
// Other requests pass straight through.
import worker, { AccountObject, Counter, KeyObject, KeyRelay } from "./index.js";

export { AccountObject, Counter, KeyObject, KeyRelay };

/** A Durable Object namespace whose stubs (from getByName) run each method call through `around`. */
const aroundCalls = (namespace, around) =>
  new Proxy(namespace, {
    get(target, prop) {
      const value = target[prop];
      if (prop !== "getByName") return typeof value === "function" ? value.bind(target) : value;
      return (...args) => {
        const stub = value.apply(target, args);
        return new Proxy(stub, {
          get(s, method) {
            // Not a thenable: a stub may be passed through `await` without being called.
            if (method === "then") return undefined;
            return (...callArgs) => around(() => s[method](...callArgs));
          },
        });
      };
    },
  });

/** The Durable Object bindings, by the kind of object their calls are counted as. */
const KINDS = { KEYS: "key", RELAYS: "relay", ACCOUNTS: "account", COUNTERS: "counter" };

/** `env` with every Durable Object call run through `around(kind, call)`. */
const aroundEveryCall = (env, around) => ({
  ...env,
  ...Object.fromEntries(Object.entries(KINDS).map(([binding, kind]) => [binding, aroundCalls(env[binding], (call) => around(kind, call))])),
});

/** Durable Object calls made by this isolate under the simulated round trip, and requests it served. */
let farCalls = 0;
let farRequests = 0;
const farEnvs = new WeakMap();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The isolate's bindings with every Durable Object call delayed by `rtt` ms and counted (one wrapped env per env). */
function farEnv(env, rtt) {
  let wrapped = farEnvs.get(env);
  if (!wrapped) {
    const there = rtt / 2;
    const back = rtt - there;
    wrapped = aroundEveryCall(env, async (_kind, call) => {
      farCalls += 1;
      await sleep(there);
      try {
        return await call();
      } finally {
        await sleep(back);
      }
    });
    farEnvs.set(env, wrapped);
  }
  return wrapped;
}

/** Requests marked `X-Bench-Tally` that this isolate served, and the Durable Object calls they made by kind. */
const tally = { requests: 0, key: 0, relay: 0, account: 0, counter: 0 };
const tallyEnvs = new WeakMap();

/** The bindings a marked request sees: every Durable Object call counted in `tally` (one wrapped env per env). */
function tallyEnv(env) {
  let wrapped = tallyEnvs.get(env);
  if (!wrapped) {
    wrapped = aroundEveryCall(env, (kind, call) => {
      tally[kind] += 1;
      return call();
    });
    tallyEnvs.set(env, wrapped);
  }
  return wrapped;
}

/** D1 that calls `counted` for each round trip (a statement, or a batch); sessions of it are counted the same. */
function countingDb(db, counted) {
  const real = new WeakMap();
  const statement = (s) => {
    const p = new Proxy(s, {
      get(target, prop) {
        const value = target[prop];
        if (typeof value !== "function") return value;
        if (prop === "bind") return (...args) => statement(value.apply(target, args));
        if (["all", "run", "first", "raw"].includes(prop)) {
          return (...args) => {
            counted();
            return value.apply(target, args);
          };
        }
        return value.bind(target);
      },
    });
    real.set(p, s);
    return p;
  };
  return new Proxy(db, {
    get(target, prop, receiver) {
      // Keygate reads through a session (the Sessions API): counted the same.
      if (prop === "withSession") return () => receiver;
      if (prop === "getBookmark") return () => null;
      const value = target[prop];
      if (prop === "prepare") return (...args) => statement(value.apply(target, args));
      if (prop === "batch") {
        return (statements) => {
          counted();
          return value.call(
            target,
            statements.map((s) => real.get(s) ?? s),
          );
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** The usage queue's batches this isolate consumed: their messages (one per key's flush) and their D1 round trips. */
const usageWrites = { batches: 0, messages: 0, d1: 0 };

export default {
  async fetch(request, realEnv, ctx) {
    let env = realEnv;
    const path = new URL(request.url).pathname;
    if (path === "/__bench/tally") return Response.json(tally);
    if (path === "/__bench/usage-writes") return Response.json(usageWrites);
    if (realEnv.BENCH_DO_RTT_MS !== undefined) {
      if (path === "/__bench/do-calls") return Response.json({ calls: farCalls, requests: farRequests });
      farRequests += 1;
      env = farEnv(realEnv, Number(realEnv.BENCH_DO_RTT_MS));
    }
    if (request.headers.has("X-Bench-Tally")) {
      tally.requests += 1;
      env = tallyEnv(env);
    }
    if (!request.headers.has("X-Bench-Count")) return worker.fetch(request, env, ctx);
    const counts = { d1: 0, do: 0, key: 0, relay: 0, account: 0, counter: 0 };
    const DB = countingDb(env.DB, () => {
      counts.d1 += 1;
    });
    // Counted until the answer: a background call after it (a lease's renewal) is not this request's.
    let answered = false;
    const counting = (kind, call) => {
      if (!answered) {
        counts.do += 1;
        counts[kind] += 1;
      }
      return call();
    };
    const response = await worker.fetch(request, aroundEveryCall({ ...env, DB }, counting), ctx);
    answered = true;
    const counted = new Response(response.body, response);
    counted.headers.set(
      "X-Bench-Counts",
      Object.entries(counts)
        .map(([k, v]) => `${k}=${v}`)
        .join(";"),
    );
    return counted;
  },
  // Webhook deliveries and the cron sweep, as the Worker itself runs them (nothing of theirs is counted); the usage
  // queue's batches with their D1 round trips counted (`/__bench/usage-writes`).
  queue(batch, env, ctx) {
    if (batch.queue !== "keygate-usage") return worker.queue(batch, env, ctx);
    usageWrites.batches += 1;
    usageWrites.messages += batch.messages.length;
    const DB = countingDb(env.DB, () => {
      usageWrites.d1 += 1;
    });
    return worker.queue(batch, { ...env, DB }, ctx);
  },
  scheduled: (controller, env, ctx) => worker.scheduled(controller, env, ctx),
};
