// Bench-only entry around the built worker: with `X-Bench-Count: 1`, counts the D1 round trips and Durable Object
// calls a request makes before its response, and reports them in `X-Bench-Counts`. Other requests pass straight through.
import worker, { Counter, KeyObject } from "./index.js";

export { Counter, KeyObject };

export default {
  async fetch(request, env, ctx) {
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
    const countingCalls = (namespace) =>
      new Proxy(namespace, {
        get(target, prop) {
          const value = target[prop];
          if (prop !== "getByName") return typeof value === "function" ? value.bind(target) : value;
          return (...args) => {
            const stub = value.apply(target, args);
            return new Proxy(stub, {
              get(s, method) {
                return (...callArgs) => {
                  counts.do += 1;
                  return s[method](...callArgs);
                };
              },
            });
          };
        },
      });
    const response = await worker.fetch(request, { ...env, DB, KEYS: countingCalls(env.KEYS), COUNTERS: countingCalls(env.COUNTERS) }, ctx);
    const counted = new Response(response.body, response);
    counted.headers.set("X-Bench-Counts", `d1=${counts.d1};do=${counts.do}`);
    return counted;
  },
};
