import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKeygate } from "../../scripts/keygate-server.mjs";

const OPERATOR_TOKEN = "e2e-operator-token-0123456789abcdef0123";
let keygate: Awaited<ReturnType<typeof startKeygate>>;

beforeAll(async () => {
  // Two isolates of one deployment: two Workers running the same bundle, sharing D1 and the Durable Objects. What is
  // measured is the limit, not the deadline: 400 requests at once on a busy machine would otherwise meet it.
  keygate = await startKeygate({
    port: 0,
    bindings: { OPERATOR_TOKEN, ALLOW_HTTP: "true", RATE_LIMIT_TIMEOUT_MS: "30000" },
    isolates: 2,
  });
});

afterAll(async () => {
  await keygate?.mf.dispose();
});

async function post<T>(url: string, token: string, body: unknown): Promise<T> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return res.json() as Promise<T>;
}

describe("two isolates sharing one key's object", () => {
  it("never admit more than the limit between them, leases and all", async () => {
    const [one, two] = keygate.urls as [string, string];
    const { key } = await post<{ key: { key: string } }>(`${one}/v1/accounts`, OPERATOR_TOKEN, {
      name: "Iso",
      admin: { email: "iso@example.com" },
    });
    const limited = await post<{ key: string }>(`${two}/v1/api-keys`, key.key, {
      name: "hot",
      rateLimit: { limit: 50, windowSeconds: 60 },
    });
    const statuses = await Promise.all(
      Array.from({ length: 400 }, (_, i) =>
        fetch(`${i % 2 ? one : two}/v1/whoami`, {
          headers: { "X-API-Key": limited.key, "CF-Connecting-IP": `10.1.${i >> 8}.${i & 255}` },
        }).then((r) => r.status),
      ),
    );
    const admitted = statuses.filter((s) => s === 200).length;
    expect(statuses.filter((s) => s !== 200 && s !== 429)).toEqual([]);
    expect(admitted).toBeLessThanOrEqual(50);
    // What is not admitted is at most what the isolates still hold in leases.
    expect(admitted).toBeGreaterThanOrEqual(25);
  });
});
