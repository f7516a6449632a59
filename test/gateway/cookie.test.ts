import { describe, expect, it } from "vitest";
import { expectProblem, provision } from "../helpers";
import { type Echo, gw } from "./table";

const SESSION = "__Host-keygate_session";

async function forwardedCookie(key: string | undefined, cookie: string, path = "/v1/reports/daily"): Promise<string | undefined> {
  const res = await gw(path, { ...(key === undefined ? {} : { key }), headers: { Cookie: cookie } });
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json<Echo>()).headers.cookie;
}

describe("gateway: the dashboard's session cookie never reaches the upstream", () => {
  it("drops it from the Cookie header and keeps the client's other cookies as sent", async () => {
    const { key } = await provision();
    const session = `ses_${"a".repeat(24)}.cs_${"b".repeat(64)}`;
    expect(await forwardedCookie(key.key, `theme=dark; ${SESSION}=${session}; cart=3`)).toBe("theme=dark; cart=3");
    expect(await forwardedCookie(key.key, `${SESSION}=${session}; theme=dark`)).toBe("theme=dark");
    expect(await forwardedCookie(key.key, `theme=dark;${SESSION}=${session}`)).toBe("theme=dark");
    // Repeated Cookie headers joined with a comma.
    expect(await forwardedCookie(key.key, `theme=dark, ${SESSION}=${session}`)).toBe("theme=dark");
    // Nothing else left: no Cookie header at all.
    expect(await forwardedCookie(key.key, `${SESSION}=${session}`)).toBeUndefined();
    // Public routes forward without authentication, and still without the cookie.
    expect(await forwardedCookie(undefined, `${SESSION}=${session}; a=1`, "/v1/status")).toBe("a=1");
  });

  it("leaves a Cookie header without it untouched, look-alike names included", async () => {
    const { key } = await provision();
    for (const cookie of ["a=1;b=2", "a=1; b=x,y", `keygate_session=1; __Host-keygate_session2=2; x${SESSION}=3`]) {
      expect(await forwardedCookie(key.key, cookie)).toBe(cookie);
    }
  });

  it("is no credential for the gateway", async () => {
    const res = await gw("/v1/reports/daily", { headers: { Cookie: `${SESSION}=ses_${"a".repeat(24)}.cs_${"b".repeat(64)}` } });
    await expectProblem(res, 401, "missing_credentials");
  });
});
