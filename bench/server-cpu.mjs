// What the benchmarks read of the server under load: the workerd process's CPU time, and when it has gone quiet.
import { existsSync, readdirSync, readFileSync } from "node:fs";

/**
 * CPU time (ms) used so far by the workerd process (every isolate and Durable Object), read from /proc; null where
 * there is none. Per request it is the work a scenario costs, whatever else the machine's other tenants are doing.
 */
export function workerdCpu() {
  if (!existsSync("/proc/self/stat")) return () => null;
  const pid = readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .find((d) => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, "utf8");
        return stat.includes("(workerd)") && stat.split(") ")[1].split(" ")[1] === String(process.pid);
      } catch {
        return false;
      }
    });
  if (!pid) return () => null;
  // utime and stime, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
  return () => {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  };
}

/**
 * A function that waits until the server is quiet (under a tenth of a core for a quarter of a second, at most
 * `maxMs`) and answers how long it waited: work a scenario leaves behind (each key's object recording its last use
 * after a warm-up of 1,000 keys, say) then weighs on none of the runs that follow it. `serverCpu` is workerdCpu()'s.
 */
export function settler(serverCpu, maxMs = 10_000) {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  return async () => {
    const start = Date.now();
    if (serverCpu() === null) await sleep(1000);
    else {
      for (let before = serverCpu(); Date.now() - start < maxMs; before = serverCpu()) {
        await sleep(250);
        if (serverCpu() - before < 25) break;
      }
    }
    return Date.now() - start;
  };
}
