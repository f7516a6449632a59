// Attacks on the gateway (src/gateway/*): each test is a way a client could try to break one of its guarantees.
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { createKey, expectProblem, ORIGIN, own, provision, through } from "../helpers";
import { type Echo, GATEWAY, gw, ROUTES, UPSTREAM } from "./table";

const PORT = new URL(UPSTREAM).port;

const forwarded = (res: Response) => res.headers.get("X-Upstream") === "yes";

describe("attack: SSRF through UPSTREAM_URL path joining", () => {
  // A path starting with `//` read as a scheme-relative URL would send the request, with Keygate's identity headers and
  // a signed assertion, to a host named by the client.
  it("never sends a request to a host other than UPSTREAM_URL's", async () => {
    const { key } = await provision();
    // The configured upstream is down (so a correct gateway answers 502); `//localhost:<port>` names another host.
    const res = await gw(`${ORIGIN}//localhost:${PORT}/steal`, { key: key.key }, { UPSTREAM_URL: "http://127.0.0.1:1" });
    const seen = forwarded(res) ? ((await res.clone().json()) as Echo) : null;
    expect(seen?.headers.host, "the request reached a host the operator never configured").toBeUndefined();
    expect(res.status).not.toBe(200);
  });
});

describe("attack: 500s (and spent budget) from crafted paths", () => {
  // A path that makes no valid upstream URL (`//a%20b/x`) must not become a 500, nor spend the key's budget.
  it("answers a path that makes no upstream URL without a 500 and without spending", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 3, windowSeconds: 60 } });
    const res = await gw(`${ORIGIN}//a%20b/x`, { key: limited.key });
    expect(res.status, await res.clone().text()).not.toBe(500);
    const next = await gw("/v1/anything", { key: limited.key });
    expect(next.headers.get("X-RateLimit-Remaining")).toBe("2");
  });

  it("answers the same path on a public route without a 500", async () => {
    const res = await gw(`${ORIGIN}//a%20b/x`, {}, { GATEWAY_ROUTES: JSON.stringify([{ pattern: "/*", auth: "public" }]) });
    expect(res.status, await res.clone().text()).not.toBe(500);
  });
});

describe("attack: path encodings that the route table and the upstream read differently", () => {
  // Upstreams decode paths (RFC 3986 §6.2.2.2: `%72uns` is `runs`), and many merge slashes, strip `;params`, route
  // case-insensitively or decode %2F. Any spelling the table reads otherwise than the upstream would skip a stricter
  // route for a laxer one: a process-scoped key may not DELETE /v1/processes/:id/runs (access: full) by any spelling.
  it("does not let a scoped key reach a full-access route through an encoded or non-canonical path", async () => {
    const { account, key } = await provision();
    await own(account.id, "process:p1");
    const scoped = await createKey(key.key, { processIds: ["p1"] });
    await expectProblem(await gw("/v1/processes/p1/runs", { key: scoped.key, method: "DELETE" }), 403, "insufficient_scope");

    const res = await gw("/v1/processes/p1/%72uns", { key: scoped.key, method: "DELETE" });
    if (forwarded(res)) {
      // What a Hono upstream does with the URL it was sent: the full-access-only handler runs.
      const upstream = new Hono().delete("/v1/processes/:id/runs", (c) => c.text(`all runs of ${c.req.param("id")} deleted`));
      const { url } = (await res.clone().json()) as Echo;
      expect(await (await upstream.request(url, { method: "DELETE" })).text()).toBe("all runs of p1 deleted");
    }
    const through: string[] = [];
    for (const variant of ["%72uns", "/runs", "runs;x", "RUNS", "runs%2F"]) {
      const r = await gw(`/v1/processes/p1/${variant}`, { key: scoped.key, method: "DELETE" });
      if (forwarded(r)) through.push(variant);
    }
    expect(through, "DELETE variants of a full-access route forwarded for a process-scoped key").toEqual([]);
  });

  // `/v1/reports/*` costs 5, however its path is spelt (`/v1/%72eports/...` is the same report upstream).
  it("charges a route's cost whatever the spelling of its path", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 20, windowSeconds: 60 } });
    const res = await gw("/v1/%72eports/monthly", { key: limited.key });
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("15");
  });

  // The `*` tail is not checked, so it must not hold `..%2F`: an upstream (or a proxy in front of it) that decodes then
  // normalises would read `<own org>/projects/warehouse/..%2F..%2F..%2F<victim>%2F...` as the victim's organization.
  it("does not forward a tail that decodes to dot segments escaping the checked prefix", async () => {
    const { account, key } = await provision();
    const victim = await provision();
    const tail = `..%2F..%2F..%2F${victim.account.id}%2Fprojects%2Fwarehouse%2Fdevices`;
    const res = await gw(`/api/v1/organizations/${account.id}/projects/warehouse/${tail}`, { key: key.key });
    if (forwarded(res)) {
      const { url } = (await res.clone().json()) as Echo;
      const normalised = new URL(decodeURIComponent(url), "http://upstream").pathname;
      expect(normalised).toBe(`/api/v1/organizations/${victim.account.id}/projects/warehouse/devices`);
    }
    expect(forwarded(res), "a path escaping the caller's own organization was forwarded").toBe(false);

    const mailboxKey = await createKey(key.key, { mailboxIds: ["mbx_1"] });
    const mailbox = await gw("/v1/mailboxes/mbx_1/..%2Fmbx_2/messages", { key: mailboxKey.key });
    expect(forwarded(mailbox), "a path escaping the granted mailbox was forwarded").toBe(false);
  });

  // Keygate's own router decodes paths, so `/v1/%77hoami` is Keygate's /v1/whoami and never the upstream's.
  it("never forwards an encoded spelling of Keygate's own paths", async () => {
    const { key } = await provision();
    const own = await through({ ...GATEWAY, GATEWAY_ROUTES: "[]" }, "/v1/%77hoami", { key: key.key });
    expect(((await own.json()) as { keyId: string }).keyId).toBe(key.id);
    const res = await gw("/v1/%77hoami", { key: key.key });
    expect(forwarded(res), "Keygate's /v1/whoami was forwarded upstream").toBe(false);
  });
});

describe("attack: paths an upstream decodes twice or normalises", () => {
  // An upstream that decodes twice reads `%252e%252e` as `..`: B's key, granted B's mailbox, would reach A's.
  it("never forwards an encoded `%`, however it is spelt", async () => {
    const a = await provision();
    const b = await provision();
    await own(a.account.id, "mailbox:mbx_victim");
    await own(b.account.id, "mailbox:mbx_mine");
    const scoped = await createKey(b.key.key, { mailboxIds: ["mbx_mine"] });
    const through: string[] = [];
    for (const tail of ["%252e%252e/mbx_victim", "%25%32%65%25%32%65/mbx_victim", "%252F..%252Fmbx_victim", "%25", "a%25b"]) {
      const res = await gw(`/v1/mailboxes/mbx_mine/${tail}/messages`, { key: scoped.key });
      if (forwarded(res)) through.push(`${tail} -> ${((await res.json()) as Echo).url}`);
      else await expectProblem(res, 404, "not_found");
    }
    expect(through, "paths holding an encoded % were forwarded").toEqual([]);
  });

  // A server that keeps paths as C strings reads `runs%00` as `runs`, and one that trims reads `runs%20` or `runs%09`
  // so: DELETE on runs is for full-access keys, and a scoped key must not reach it by a byte the table reads as text.
  it("never forwards a segment with a control character or ending in a blank", async () => {
    const { account, key } = await provision();
    await own(account.id, "process:p1");
    const scoped = await createKey(key.key, { processIds: ["p1"] });
    const through: string[] = [];
    for (const tail of ["runs%00", "runs%00.json", "runs%0A", "runs%09", "runs%7F", "runs%20", "%20runs", "runs%C2%A0"]) {
      const res = await gw(`/v1/processes/p1/${tail}`, { key: scoped.key, method: "DELETE" });
      if (forwarded(res)) through.push(tail);
      else await expectProblem(res, 404, "not_found");
    }
    expect(through, "segments an upstream may cut or trim were forwarded").toEqual([]);
    // A blank inside a segment is text like any other.
    expect(((await (await gw("/v1/my%20reports", { key: key.key })).json()) as Echo).url).toBe("/v1/my%20reports");
  });

  // Rails routes `runs.json` to `runs` (`.:format`), as Spring's suffix patterns did: the table must not judge it as
  // another route than `runs`, or a scoped key deletes runs through the route after the one kept for full access.
  it("never forwards a last segment whose extension takes it past the route its bare name meets", async () => {
    const { account, key } = await provision();
    await own(account.id, "process:p1");
    const scoped = await createKey(key.key, { processIds: ["p1"] });
    for (const tail of ["runs.json", "RUNS.xml", "runs.tar.gz"]) {
      const res = await gw(`/v1/processes/p1/${tail}`, { key: scoped.key, method: "DELETE" });
      expect(forwarded(res), tail).toBe(false);
      await expectProblem(res, 404, "not_found");
    }
    await expectProblem(await gw("/v1/status.json", { key: key.key }), 404, "not_found");
    // Where the bare name meets the same route, the extension is the upstream's to read.
    for (const [path, init] of [
      ["/v1/processes/p1/runs.json", { key: scoped.key }],
      ["/v1/processes/p1/report.pdf", { key: scoped.key, method: "DELETE" }],
      ["/v1/anything.json", { key: key.key }],
    ] as const) {
      expect(((await (await gw(path, init)).json()) as Echo).url, path).toBe(path);
    }
    // A route that names the extension takes it.
    const GATEWAY_ROUTES = JSON.stringify([{ pattern: "/v1/status.json", auth: "public" }, ...ROUTES]);
    expect(((await (await gw("/v1/status.json", {}, { GATEWAY_ROUTES })).json()) as Echo).url).toBe("/v1/status.json");
  });

  // NFKC folds `ſ` into `s`, fullwidth `ｒ` into `r` and `‥` into `..`; `ı` upper-cases to `I`: an upstream that
  // normalises or folds case would read another route, or a dot segment, than the table judged.
  it("never forwards a segment that changes under NFKC normalisation or case folding into ASCII", async () => {
    const { account, key } = await provision();
    await own(account.id, "process:p1");
    const scoped = await createKey(key.key, { processIds: ["p1"] });
    const through: string[] = [];
    for (const tail of ["%EF%BD%92uns", "run%C5%BF", "%E2%80%A5/runs", "%EF%BC%8E%EF%BC%8E/runs"]) {
      const res = await gw(`/v1/processes/p1/${tail}`, { key: scoped.key, method: "DELETE" });
      if (forwarded(res)) through.push(tail);
    }
    for (const path of ["/v1/%C5%BFtatus", "/v1/%C4%B1d", "/v1/%E2%84%AAelvin"]) {
      const res = await gw(path, { key: key.key });
      if (forwarded(res)) through.push(path);
      else await expectProblem(res, 404, "not_found");
    }
    expect(through, "segments an upstream may normalise were forwarded").toEqual([]);
    // Text that normalisation leaves as it is goes on.
    expect(((await (await gw("/v1/caf%C3%A9/%E6%97%A5", { key: key.key })).json()) as Echo).url).toBe("/v1/caf%C3%A9/%E6%97%A5");
  });

  // IIS, Symfony and Zend route by X-Original-URL / X-Rewrite-URL, and Rails, Laravel and Express's method-override by
  // `?_method=`: each would make the upstream act on another path or method than the one the table judged.
  it("drops path and method overrides on every route", async () => {
    const { account, key } = await provision();
    await own(account.id, "process:p1");
    const scoped = await createKey(key.key, { processIds: ["p1"] });
    const headers = { "X-Original-URL": "/v1/processes/p1/runs", X_Rewrite_URL: "/admin", "X-HTTP-Method-Override": "DELETE" };
    for (const [path, init] of [
      ["/v1/processes/p1/x?_method=DELETE&_METHOD=PUT&a=1", { key: scoped.key, method: "POST", headers }],
      ["/v1/status?_method=DELETE&a=1", { headers }],
    ] as const) {
      const seen = (await (await gw(path, init)).json()) as Echo;
      expect(seen.url, path).toMatch(/\?a=1$/);
      expect(
        Object.keys(seen.headers).filter((h) => /^x-(original-url|rewrite-url|http-method-override)$/.test(h.replaceAll("_", "-"))),
        path,
      ).toEqual([]);
    }
  });
  // PHP, which Laravel and Symfony run on, stores a query parameter named `.method`, ` _method` or `_method\0` as `_method` (and `_method[]` as an array of it):
  // a scoped key could then POST to runs and have Laravel delete them, which the table keeps for full-access keys.
  it("drops a method override in the spellings PHP reads as _method", async () => {
    const { account, key } = await provision();
    await own(account.id, "process:p1");
    const scoped = await createKey(key.key, { processIds: ["p1"] });
    // PHP reads a name only up to a NUL byte, so `_method%00` and `_method%00anything` are `_method` to it too.
    for (const name of [
      ".method",
      "+_method",
      "%20.method",
      "_Method",
      "_method[]",
      "_METHOD[x]",
      "_method%00",
      "_method%00x",
      ".method%00[]",
    ]) {
      const seen = (await (await gw(`/v1/processes/p1/runs?${name}=DELETE&a=1`, { key: scoped.key, method: "POST" })).json()) as Echo;
      expect(seen.url, name).toBe("/v1/processes/p1/runs?a=1");
    }
    // Names that only contain it are the provider's own.
    const seen = (await (await gw("/v1/status?http_method=GET&_methods=1&a.method=2", {})).json()) as Echo;
    expect(seen.url).toBe("/v1/status?http_method=GET&_methods=1&a.method=2");
  });
});

describe("attack: the upstream's answer in the dashboard's origin", () => {
  // Without DASHBOARD_HOST the upstream's answers come from the dashboard's origin: a Set-Cookie of Keygate's session
  // cookie would sign the browser in as whoever the upstream chose (session fixation).
  it("strips every Set-Cookie a browser would send back as one of Keygate's cookies, and keeps the others", async () => {
    const { key } = await provision();
    const sets = [
      "theme=dark; Path=/",
      "__Host-keygate_session=ses_000000000000000000000000.cs_0; Path=/; Secure; HttpOnly",
      "__host-keygate_session=x; Path=/; Secure",
      "__HOST-Keygate_Session=x; Path=/; Secure",
      " __Host-keygate_session =x; Path=/; Secure",
      "=__Host-keygate_session=x; Path=/; Secure",
      "__Secure-keygate_session=x; Secure",
      "keygate_session=x",
      "keygate_sessions=1",
    ];
    const res = await gw("/v1/anything", { key: key.key, headers: { "X-Test-Set-Cookie": JSON.stringify(sets) } });
    expect(res.headers.get("X-Upstream")).toBe("yes");
    expect(res.headers.getSetCookie()).toEqual(["theme=dark; Path=/", "keygate_sessions=1"]);
    const open = await gw("/v1/status", { headers: { "X-Test-Set-Cookie": JSON.stringify(sets.slice(1, 2)) } });
    expect(open.headers.getSetCookie()).toEqual([]);
  });
});

describe("attack: credentials and identity headers that reach the upstream", () => {
  // On public routes a Keygate key is removed however the header is written: repeated (`<key>, <key>` once joined) or
  // `Bearer<TAB><key>`.
  it("strips a Keygate key from a public route's request however the header is written", async () => {
    const { key } = await provision();
    const duplicated = new Request(`${ORIGIN}/v1/status`, {
      headers: [
        ["X-API-Key", key.key],
        ["X-API-Key", key.key],
        ["CF-Connecting-IP", "10.250.0.1"],
      ],
    });
    const seen = (await (await through(GATEWAY, duplicated)).json()) as Echo;
    expect(JSON.stringify(seen.headers), "duplicated X-API-Key").not.toContain(key.key);
    const tab = (await (await gw("/v1/status", { headers: { Authorization: `Bearer\t${key.key}` } })).json()) as Echo;
    expect(JSON.stringify(tab.headers), "Bearer<TAB>key").not.toContain(key.key);
  });

  // CGI-style upstreams (WSGI, Rack, PHP: HTTP_KEYGATE_ACCOUNT_ID) fold `_` and `-` into one name, so
  // `Keygate_Account_Id` would clobber the gateway's identity (the header-smuggling class of CVE-2024-45614).
  it("drops client headers that are Keygate's identity headers with underscores", async () => {
    const { key } = await provision();
    const res = await gw("/v1/anything", {
      key: key.key,
      headers: { Keygate_Account_Id: "acc_forged", Keygate_Role: "admin", X_Keygate_User_Id: "usr_forged" },
    });
    const seen = (await res.json()) as Echo;
    expect(Object.keys(seen.headers).filter((h) => /^(x[-_])?keygate[-_]/.test(h) && h.includes("_"))).toEqual([]);
  });
});

describe("attack: headers an upstream reads in another spelling", () => {
  // CGI-style upstreams (Rack's MethodOverride reads HTTP_X_HTTP_METHOD_OVERRIDE) take `X_HTTP_Method_Override` for the
  // real header: a scoped key's POST would become the DELETE the table reserves for full-access keys.
  it("drops method overrides however their name is spelt", async () => {
    const { account, key } = await provision();
    await own(account.id, "process:p1");
    const scoped = await createKey(key.key, { processIds: ["p1"] });
    for (const name of ["X_HTTP_Method_Override", "X_HTTP_METHOD", "X_Method_Override", "x-http-method-override"]) {
      const res = await gw("/v1/processes/p1/runs", { key: scoped.key, method: "POST", headers: { [name]: "DELETE" } });
      const seen = (await res.json()) as Echo;
      expect(
        Object.keys(seen.headers).filter((h) => /^x-(http-)?method/.test(h.replaceAll("_", "-"))),
        name,
      ).toEqual([]);
    }
  });

  // README: on public routes these headers are removed whenever they hold a Keygate key, however they are written.
  it("strips a Keygate key from a public route's request in a quoted, suffixed or underscored header", async () => {
    const { key } = await provision();
    const spellings: Record<string, string>[] = [
      { Authorization: `Bearer "${key.key}"` },
      { "X-API-Key": `${key.key};` },
      { X_API_Key: key.key },
    ];
    for (const headers of spellings) {
      const seen = (await (await gw("/v1/status", { headers })).json()) as Echo;
      expect(JSON.stringify(seen.headers), JSON.stringify(Object.keys(headers))).not.toContain(key.key);
    }
  });

  // Keygate's own paths are Keygate's in any case: an upstream that routes without regard to case never gets them.
  it("never forwards Keygate's own paths in another case", async () => {
    const { key } = await provision();
    expect(forwarded(await gw("/V1/WHOAMI", { key: key.key }))).toBe(false);
    expect(forwarded(await gw("/V1/API-KEYS", { key: key.key }))).toBe(false);
  });
});

describe("attack: the route table's validation", () => {
  // A router that reads patterns as regular expressions turns a typo like `/v1/status|` into a route matching every
  // path; as a public route it would forward everything unauthenticated. Such patterns are configuration errors.
  it("refuses patterns that the router reads as regular expressions", async () => {
    const GATEWAY_ROUTES = JSON.stringify([{ pattern: "/v1/status|", auth: "public" }]);
    const res = await gw("/v1/private/everything", {}, { GATEWAY_ROUTES });
    expect(forwarded(res), "an unauthenticated request to an unlisted path was forwarded").toBe(false);
    await expectProblem(res, 500, "configuration_error");
  });

  // A pattern naming one parameter twice is refused as configuration_error, which /health names.
  it("answers configuration_error (and /health names it) for a pattern that repeats a parameter", async () => {
    const GATEWAY_ROUTES = JSON.stringify([{ pattern: "/v1/:id/x/:id" }]);
    const { key } = await provision();
    await expectProblem(await gw("/v1/a/x/b", { key: key.key }, { GATEWAY_ROUTES }), 500, "configuration_error");
    const health = await through({ ...GATEWAY, GATEWAY_ROUTES }, "/health");
    expect((await expectProblem(health, 500, "configuration_error")).variables).toEqual(["GATEWAY_ROUTES"]);
  });

  // A signing key that is not a P-256 key is refused when the variable is read, so /health names it.
  it("refuses an assertion key that is not a valid P-256 key at configuration time", async () => {
    const ASSERTION_SIGNING_KEYS = JSON.stringify([{ kid: "broken", kty: "EC", crv: "P-256", x: "AAAA", y: "AAAA", d: "AAAA" }]);
    const health = await through({ ...GATEWAY, ASSERTION_SIGNING_KEYS }, "/health");
    expect((await expectProblem(health, 500, "configuration_error")).variables).toEqual(["ASSERTION_SIGNING_KEYS"]);
  });
});

describe("attack: cost abuse through refunds", () => {
  // A 504 means the upstream received the request and may have done the work: it spends, so a slow upstream never
  // serves more requests than the budget.
  it("does not give back a request the upstream received", async () => {
    const { key } = await provision();
    const limited = await createKey(key.key, { rateLimit: { limit: 1, windowSeconds: 60 } });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await gw("/slow/x?ms=400", { key: limited.key }, { UPSTREAM_TIMEOUT_MS: "100" })).status);
    expect(statuses).toEqual([504, 429, 429]);
  });
});
