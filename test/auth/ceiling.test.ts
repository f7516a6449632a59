import { describe, expect, it } from "vitest";
import { PASSWORD, page, person, signIn } from "../dashboard/helpers";
import { call, createKey, expectProblem, provision } from "../helpers";

/** An account whose members' ceiling (3 a minute) is far below its default limit (1000 a minute). */
async function lowCeiling() {
  return provision({ rateLimit: { limit: 1000, windowSeconds: 60 }, maxRateLimit: { limit: 3, windowSeconds: 60 } });
}

/** Three whoami calls pass, each saying the limit is the ceiling's; the fourth is 429. */
async function expectCeiling(whoami: () => Promise<Response>) {
  for (let i = 0; i < 3; i++) {
    const res = await whoami();
    expect(res.status, await res.clone().text()).toBe(200);
    expect(res.headers.get("X-RateLimit-Limit")).toBe("3");
    expect(await res.json()).toMatchObject({ rateLimit: { limit: 3, windowSeconds: 60 } });
  }
  await expectProblem(await whoami(), 429, "rate_limited");
}

describe("a member is held to the account's maxRateLimit whichever credential they use", () => {
  it("a member's key on the account's default", async () => {
    const { key } = await lowCeiling();
    const member = await person(key.key);
    const memberKey = await createKey(key.key, { ownerId: member.id });
    await expectCeiling(() => call("/v1/whoami", { key: memberKey.key }));
  });

  it("a member's access token", async () => {
    const { key } = await lowCeiling();
    const member = await person(key.key);
    const login = await call("/v1/auth/login", { body: { email: member.email, password: PASSWORD } });
    const { access_token } = await login.json<{ access_token: string }>();
    await expectCeiling(() => call("/v1/whoami", { key: access_token }));
  });

  it("a member's dashboard session", async () => {
    const { key } = await lowCeiling();
    const member = await person(key.key);
    const cookie = await signIn(member.email);
    for (let i = 0; i < 3; i++) expect((await page("/dashboard/keys", { cookie })).status).toBe(200);
    expect((await page("/dashboard/keys", { cookie })).status).toBe(429);
  });

  it("an admin's access token follows the account's default", async () => {
    const { key } = await lowCeiling();
    const admin = await person(key.key, "admin");
    const login = await call("/v1/auth/login", { body: { email: admin.email, password: PASSWORD } });
    const { access_token } = await login.json<{ access_token: string }>();
    const res = await call("/v1/whoami", { key: access_token });
    expect(res.headers.get("X-RateLimit-Limit")).toBe("1000");
  });
});
