import { describe, expect, it } from "vitest";
import { PASSWORD, person } from "../dashboard/helpers";
import { gw } from "../gateway/table";
import { call, createKey, expectProblem, memberWithKey, provision } from "../helpers";

const remaining = (res: Response) => res.headers.get("X-RateLimit-Remaining");

describe("what an authenticated request spends, by its answer", () => {
  it("a refusal or failure the upstream answered a forwarded request spends, as its success does", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 10, windowSeconds: 60 } });
    const answers = [];
    for (const status of [401, 403, 500, 503, 200]) {
      const res = await gw(`/status/${status}`, { key: limited.key });
      expect(res.status).toBe(status);
      expect(res.headers.get("X-Upstream")).toBe("yes");
      answers.push(remaining(res));
    }
    expect(answers).toEqual(["9", "8", "7", "6", "5"]);
  });

  it("Keygate's own refusal after admission spends nothing, and says what is left", async () => {
    const { key } = await provision();
    const { key: memberKey } = await memberWithKey(key.key);
    const first = await call("/v1/whoami", { key: memberKey.key });
    const left = Number(remaining(first));
    for (let i = 0; i < 3; i++) {
      const res = await call("/v1/api-keys", { key: memberKey.key, body: { name: "x" } });
      await expectProblem(res, 403, "insufficient_role");
      expect(remaining(res)).toBe(String(left - 1));
    }
    expect(remaining(await call("/v1/whoami", { key: memberKey.key }))).toBe(String(left - 1));
  });
});

describe("what a gateway route costs", () => {
  it("a person's access token spends the route's cost, as a key does", async () => {
    const { key } = await provision({ rateLimit: { limit: 12, windowSeconds: 60 } });
    const { email } = await person(key.key);
    const login = await call("/v1/auth/login", { body: { email, password: PASSWORD } });
    const { access_token } = await login.json<{ access_token: string }>();
    expect(remaining(await gw("/v1/reports/monthly", { key: access_token }))).toBe("7");
    expect(remaining(await gw("/v1/reports/monthly", { key: access_token }))).toBe("2");
    await expectProblem(await gw("/v1/reports/monthly", { key: access_token }), 429, "rate_limited");
    // The admin's key spent one inviting the person: it spends the same 5 of its own budget.
    expect(remaining(await gw("/v1/reports/monthly", { key: key.key }))).toBe("6");
  });
});
