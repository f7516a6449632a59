// Where Keygate names itself: the assertion's issuer (PUBLIC_ORIGIN, never the request's Host) and the dashboard's
// own hostname (DASHBOARD_HOST).
import { decodeJwt } from "jose";
import { describe, expect, it } from "vitest";
import { expectProblem, provision, through } from "../helpers";
import { type Echo, GATEWAY, gw } from "./table";

const issuer = async (res: Response) => {
  expect(res.status, await res.clone().text()).toBe(200);
  return decodeJwt(((await res.json()) as Echo).headers["keygate-assertion"] as string).iss;
};

describe("the assertion's issuer", () => {
  it("is PUBLIC_ORIGIN whatever host the request names", async () => {
    const { key } = await provision();
    for (const host of ["https://keygate.test", "https://evil.example", "https://evil.example:8443"])
      expect(await issuer(await gw(`${host}/v1/anything`, { key: key.key }, { PUBLIC_ORIGIN: "https://api.keygate.example" }))).toBe(
        "https://api.keygate.example",
      );
  });

  it("follows the request only in local development (plain http allowed, a loopback host), else is a configuration error", async () => {
    const { key } = await provision();
    const local = { PUBLIC_ORIGIN: undefined, ALLOW_HTTP: "true" };
    for (const origin of ["http://127.0.0.1:8787", "http://localhost:8787", "http://[::1]:8787"])
      expect(await issuer(await gw(`${origin}/v1/anything`, { key: key.key }, local))).toBe(origin);
    for (const [origin, overrides] of [
      ["http://evil.example", local],
      ["https://keygate.test", { PUBLIC_ORIGIN: undefined }],
      ["https://localhost", { PUBLIC_ORIGIN: undefined }],
    ] as const) {
      const res = await gw(`${origin}/v1/anything`, { key: key.key }, overrides);
      expect(res.headers.get("X-Upstream"), origin).toBeNull();
      await expectProblem(res, 500, "configuration_error");
    }
    // Public routes sign nothing, so they need no issuer.
    expect((await gw("/v1/status", {}, { PUBLIC_ORIGIN: undefined })).headers.get("X-Upstream")).toBe("yes");
    const health = await through({ ...GATEWAY, PUBLIC_ORIGIN: undefined }, "/health");
    expect((await expectProblem(health, 500, "configuration_error")).variables).toEqual(["PUBLIC_ORIGIN"]);
    expect((await through({ ...GATEWAY, PUBLIC_ORIGIN: undefined, ALLOW_HTTP: "true" }, "/health")).status).toBe(200);
  });

  it("refuses a PUBLIC_ORIGIN that is not an origin", async () => {
    const { key } = await provision();
    for (const PUBLIC_ORIGIN of [
      "keygate.example",
      "https://keygate.example/path",
      "ftp://keygate.example",
      "https://u:p@keygate.example",
    ]) {
      await expectProblem(await gw("/v1/anything", { key: key.key }, { PUBLIC_ORIGIN }), 500, "configuration_error");
      const health = await through({ ...GATEWAY, PUBLIC_ORIGIN }, "/health");
      expect((await expectProblem(health, 500, "configuration_error")).variables, PUBLIC_ORIGIN).toEqual(["PUBLIC_ORIGIN"]);
    }
  });
});

describe("DASHBOARD_HOST", () => {
  const DASHBOARD_HOST = "dash.keygate.test";

  it("serves the dashboard on its own host only, and no gateway traffic there", async () => {
    const { key } = await provision();
    for (const path of ["/dashboard", "/dashboard/login", "/dashboard/dashboard.css"]) {
      await expectProblem(await gw(path, {}, { DASHBOARD_HOST }), 404, "not_found");
      const own = await gw(`https://${DASHBOARD_HOST}${path}`, {}, { DASHBOARD_HOST });
      expect(own.status, path).toBeLessThan(400);
    }
    // On the dashboard's host nothing is forwarded: the upstream's pages never share its origin.
    for (const path of ["/v1/status", "/v1/anything"]) {
      const res = await gw(`https://${DASHBOARD_HOST}${path}`, { key: key.key }, { DASHBOARD_HOST });
      expect(res.headers.get("X-Upstream"), path).toBeNull();
      await expectProblem(res, 404, "not_found");
      expect((await gw(path, { key: key.key }, { DASHBOARD_HOST })).headers.get("X-Upstream"), path).toBe("yes");
    }
    // Keygate's own API answers on both hosts.
    for (const host of [`https://${DASHBOARD_HOST}`, "https://keygate.test"])
      expect((await gw(`${host}/v1/whoami`, { key: key.key }, { DASHBOARD_HOST })).status, host).toBe(200);
    // Unset, the dashboard answers on every host, as before.
    expect((await gw("/dashboard/login", {})).status).toBe(200);
  });

  it("is where invitation links point; without it PUBLIC_ORIGIN is, and without both the host the request named", async () => {
    const { key } = await provision();
    const link = async (host: string, overrides: Partial<Cloudflare.Env>) => {
      const body = { email: `i${crypto.randomUUID().slice(0, 8)}@example.com`, role: "member" };
      const res = await gw(`${host}/v1/users`, { key: key.key, body }, overrides);
      expect(res.status, await res.clone().text()).toBe(201);
      return (await res.json<{ invitation: { url: string } }>()).invitation.url;
    };
    const path = "/dashboard/accept-invitation#token=";
    expect(await link("https://keygate.test", { DASHBOARD_HOST })).toMatch(new RegExp(`^https://${DASHBOARD_HOST}${path}`));
    expect(await link("https://other.example", { PUBLIC_ORIGIN: "https://api.keygate.example" })).toMatch(
      new RegExp(`^https://api\\.keygate\\.example${path}`),
    );
    expect(await link("https://other.example", { PUBLIC_ORIGIN: undefined })).toMatch(new RegExp(`^https://other\\.example${path}`));
  });

  it("refuses a DASHBOARD_HOST that is not a host", async () => {
    for (const value of ["https://dash.example", "dash.example/", "dash example", "dash.example:99999"]) {
      const health = await through({ ...GATEWAY, DASHBOARD_HOST: value }, "/health");
      expect((await expectProblem(health, 500, "configuration_error")).variables, value).toEqual(["DASHBOARD_HOST"]);
      await expectProblem(await through({ DASHBOARD_HOST: value }, "/dashboard/login"), 500, "configuration_error");
    }
  });
});
