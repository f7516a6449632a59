// Bench-only entry around the built worker.
// - With `X-Bench-Count: 1`, counts the D1 round trips and Durable Object calls a request makes before its response,
//   and reports them in `X-Bench-Counts`.
// - In an isolate given the binding BENCH_DO_RTT_MS (the far-away counter), every Durable Object call of every request
//   takes that simulated round trip (half on the way there, half on the way back) and is counted, as are the requests;
//   `GET /__bench/do-calls` answers how many of each this isolate has seen so far.
// Other requests pass straight through.
import worker, { Counter, KeyObject } from "./index.js";

export { Counter, KeyObject };

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
    const far = async (call) => {
      farCalls += 1;
      await sleep(there);
      try {
        return await call();
      } finally {
        await sleep(back);
      }
    };
    wrapped = { ...env, KEYS: aroundCalls(env.KEYS, far), COUNTERS: aroundCalls(env.COUNTERS, far) };
    farEnvs.set(env, wrapped);
  }
  return wrapped;
}

export default {
  async fetch(request, realEnv, ctx) {
    let env = realEnv;
    if (realEnv.BENCH_DO_RTT_MS !== undefined) {
      if (new URL(request.url).pathname === "/__bench/do-calls") return Response.json({ calls: farCalls, requests: farRequests });
      farRequests += 1;
      env = farEnv(realEnv, Number(realEnv.BENCH_DO_RTT_MS));
    }
    if (!request.headers.has("X-Bench-Count")) return worker.fetch(request, env, ctx);
    const counts = { d1: 0, do: 0 };
    const real = new WeakMap();
    const statement = (s) => {
      const p = new Proxy(s, {
        get(target, prop) {
          const value = target[prop];
          if (typeof value !== "function") return value;
          if (prop === "bind") return (...args) => statement(value.apply(target, args));
          if (["all", "run", "first", "raw"].includes(prop)) {
            return (...args) => {
              counts.d1 += 1;
              return value.apply(target, args);
            };
          }
          return value.bind(target);
        },
      });
      real.set(p, s);
      return p;
    };
    const DB = new Proxy(env.DB, {
      get(target, prop) {
        const value = target[prop];
        if (prop === "prepare") return (...args) => statement(value.apply(target, args));
        if (prop === "batch") {
          return (statements) => {
            counts.d1 += 1;
            return value.call(
              target,
              statements.map((s) => real.get(s) ?? s),
            );
          };
        }
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const counting = (call) => {
      counts.do += 1;
      return call();
    };
    const response = await worker.fetch(
      request,
      { ...env, DB, KEYS: aroundCalls(env.KEYS, counting), COUNTERS: aroundCalls(env.COUNTERS, counting) },
      ctx,
    );
    const counted = new Response(response.body, response);
    counted.headers.set("X-Bench-Counts", `d1=${counts.d1};do=${counts.do}`);
    return counted;
  },
};
