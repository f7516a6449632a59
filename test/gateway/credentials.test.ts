// A credential of any kind never reaches the upstream: keys, handshake tokens, a person's access and refresh tokens,
// the dashboard's cookie secret and the operator and verify tokens, however a client writes them.
import { describe, expect, it } from "vitest";
import { call, createAgent, expectProblem, handshake, OPERATOR_TOKEN, provision, VERIFY_TOKEN } from "../helpers";
import { type Echo, gw, ROUTES } from "./table";

const PASSWORD = "correct horse battery";

/** Every kind of secret Keygate gives out or takes, for one fresh account (checksummed keys) and a key of a plain one. */
async function secrets() {
  const { key } = await provision();
  const plain = await provision({ keyFormat: "plain" });
  const email = `c${crypto.randomUUID().slice(0, 8)}@example.com`;
  const invited = await (await call("/v1/users", { key: key.key, body: { email, role: "member" } })).json<{
    invitation: { token: string };
  }>();
  expect((await call("/v1/auth/accept-invitation", { body: { token: invited.invitation.token, password: PASSWORD } })).status).toBe(200);
  const login = await call("/v1/auth/login", { body: { email, password: PASSWORD } });
  const pair = await login.json<{ access_token: string; refresh_token: string }>();
  const agent = await createAgent(key.key);
  const { token } = await (await handshake(agent.id)).json<{ token: string }>();
  return {
    key: key.key,
    plainKey: plain.key.key,
    access: pair.access_token,
    refresh: pair.refresh_token,
    cookie: `ses_${"a".repeat(24)}.cs_${"b".repeat(64)}`,
    handshake: token,
    operator: OPERATOR_TOKEN,
    verify: VERIFY_TOKEN,
  };
}

type Secrets = Awaited<ReturnType<typeof secrets>>;

/** What the upstream received. */
async function received(res: Response): Promise<Echo> {
  const text = await res.text();
  expect(res.status, text).toBe(200);
  expect(res.headers.get("X-Upstream")).toBe("yes");
  return JSON.parse(text) as Echo;
}

/** All of it as one text: its URL and every header. */
const everything = (seen: Echo) => `${seen.url}\n${JSON.stringify(seen.headers)}`;

/** The secrets (or their core: a key's hex, a JWT's signature, a token's text) found in `text`, in any case. */
function leaked(text: string, kinds: Secrets): string[] {
  const lower = text.toLowerCase();
  return Object.entries(kinds)
    .filter(([, secret]) => {
      const core = secret.includes(".") ? (secret.split(".").at(-1) as string) : secret.replace(/^[a-z0-9]+_/, "");
      return lower.includes(core.toLowerCase());
    })
    .map(([name]) => name);
}

const basic = (user: string, password = "") => `Basic ${btoa(`${user}:${password}`)}`;

/** Every way a client may present one secret in the credential headers. */
function spellings(secret: string): Record<string, string>[] {
  return [
    { Authorization: `Bearer ${secret}` },
    { Authorization: `bearer   ${secret}  ` },
    { Authorization: `Token ${secret}` },
    { Authorization: `Bearer "${secret}"` },
    { Authorization: basic(secret) },
    { Authorization: basic("user", secret) },
    { Authorization: `Basic ${btoa(secret)}` },
    { Authorization: `Bearer ${secret}.` },
    { Authorization: `Bearer x${secret}` },
    { "X-API-Key": secret },
    { "X-API-Key": `${secret};` },
    { "X-API-Key": `${secret}0` },
    { X_API_Key: secret },
  ];
}

describe("credentials on public routes", () => {
  it("never forwards Authorization, X-API-Key or the query token of a public route, whatever they hold", async () => {
    const kinds = await secrets();
    for (const [name, secret] of Object.entries(kinds)) {
      for (const headers of spellings(secret)) {
        const seen = await received(await gw(`/v1/status?userApiToken=${encodeURIComponent(secret)}`, { headers }));
        expect(leaked(everything(seen), kinds), `${name} in ${JSON.stringify(Object.keys(headers))}`).toEqual([]);
      }
    }
    // Not even the provider's own: a public route passes on no credential unless it says so.
    const seen = await received(await gw("/v1/status", { headers: { Authorization: basic("user", "pw"), "X-API-Key": "theirs" } }));
    expect(seen.headers.authorization).toBeUndefined();
    expect(seen.headers["x-api-key"]).toBeUndefined();
  });

  it("passes the provider's own credentials on a route with forwardAuthorization, never one of Keygate's", async () => {
    const GATEWAY_ROUTES = JSON.stringify([{ pattern: "/v1/status", auth: "public", forwardAuthorization: true }]);
    const providerJwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl";
    for (const value of [basic("user", "pw"), `Bearer ${providerJwt}`, "Bearer prov_0123"]) {
      const seen = await received(await gw("/v1/status", { headers: { Authorization: value, "X-API-Key": "theirs" } }, { GATEWAY_ROUTES }));
      expect(seen.headers.authorization).toBe(value);
      expect(seen.headers["x-api-key"]).toBe("theirs");
    }
    const kinds = await secrets();
    for (const [name, secret] of Object.entries(kinds)) {
      for (const headers of spellings(secret)) {
        const seen = await received(await gw("/v1/status", { headers }, { GATEWAY_ROUTES }));
        expect(leaked(everything(seen), kinds), `${name} in ${JSON.stringify(headers)}`).toEqual([]);
      }
    }
  });

  it("drops any other header, cookie or query parameter holding a Keygate secret, on every route", async () => {
    const kinds = await secrets();
    for (const [name, secret] of Object.entries(kinds)) {
      for (const path of ["/v1/status", "/v1/anything"]) {
        const res = await gw(`${path}?page=2&token=${encodeURIComponent(secret)}&b64=${encodeURIComponent(btoa(secret))}`, {
          ...(path === "/v1/anything" ? { key: kinds.key } : {}),
          headers: {
            "X-Auth-Token": secret,
            "X-Upstream-Auth": basic(secret),
            Cookie: `theme=dark; sid=${secret}; cart=3`,
            "X-Custom": "kept",
          },
        });
        const seen = await received(res);
        expect(leaked(everything(seen), kinds), `${name} on ${path}`).toEqual([]);
        expect(seen.url).toBe(`${path}?page=2`);
        expect(seen.headers).toMatchObject({ cookie: "theme=dark; cart=3", "x-custom": "kept" });
      }
    }
  });

  it("never forwards a path holding a Keygate secret", async () => {
    const kinds = await secrets();
    const GATEWAY_ROUTES = JSON.stringify([{ pattern: "/*", auth: "public" }]);
    for (const secret of [kinds.key, kinds.plainKey, kinds.access, kinds.refresh]) {
      const res = await gw(`/files/${encodeURIComponent(secret)}`, {}, { GATEWAY_ROUTES });
      expect(res.headers.get("X-Upstream")).toBeNull();
      await expectProblem(res, 404, "not_found");
    }
  });

  it("refuses forwardAuthorization on a route that takes a credential of Keygate's", async () => {
    const GATEWAY_ROUTES = JSON.stringify([{ ...ROUTES[0], forwardAuthorization: true }]);
    await expectProblem(await gw("/v1/mailboxes/mbx_1/x", {}, { GATEWAY_ROUTES }), 500, "configuration_error");
  });
});

describe("secrets in spellings a recogniser may miss", () => {
  it("drops a header or cookie whose secret is percent-encoded next to a stray %, encoded twice, in the header's name, or after text that looks like a token's start", async () => {
    const kinds = await secrets();
    for (const [name, secret] of Object.entries(kinds)) {
      const encoded = [...secret].map((ch) => (/[A-Za-z0-9]/.test(ch) ? ch : `%${ch.charCodeAt(0).toString(16).toUpperCase()}`)).join("");
      const values = [
        `100% ${encoded}`,
        `%zz${encoded}`,
        encoded.replaceAll("%", "%25"),
        `eyJ${secret}`,
        `eyJ.${secret}`,
        `eyJa.eyJb.${secret}`,
      ];
      for (const value of values) {
        const seen = await received(await gw("/v1/status", { headers: { "X-Auth-Token": value, Cookie: `theme=dark; t=${value}` } }));
        expect(leaked(everything(seen), kinds), `${name} as ${value}`).toEqual([]);
        expect(seen.headers.cookie, `${name} as ${value}`).toBe("theme=dark");
      }
      // A header's name reaches the upstream in lower case: a JWT there is lost, a key or a token of Keygate's is not.
      if (name === "access" || name === "handshake") continue;
      const seen = await received(await gw("/v1/status", { headers: { [`X-${secret}`]: "1" } }));
      expect(leaked(everything(seen), kinds), `${name} in a header's name`).toEqual([]);
    }
  });
});
