import { base64url, decodeProtectedHeader, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { AUDIENCE, ISSUER, TOKEN_TYPE } from "../../src/tokens/handshake";
import { chat, expectProblem, SIGNING_KEYS, WIDGET_ORIGIN, widget } from "../helpers";

const enc = new TextEncoder();
const [signer, older] = SIGNING_KEYS as [{ kid: string; secret: string }, { kid: string; secret: string }];

type Forge = {
  header?: Record<string, unknown>;
  claims?: Record<string, unknown>;
  secret?: string;
  alg?: string;
};

/** A token made outside Keygate: valid in every respect unless the test changes one. */
async function forge(base: { sub: string; agt: string; acc: string }, f: Forge = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: ISSUER,
    aud: AUDIENCE,
    ...base,
    origin: WIDGET_ORIGIN,
    jti: crypto.randomUUID(),
    iat: now,
    exp: now + 600,
    ...f.claims,
  };
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete (claims as Record<string, unknown>)[k];
  return new SignJWT(claims)
    .setProtectedHeader({ alg: f.alg ?? "HS256", kid: signer.kid, typ: TOKEN_TYPE, ...f.header } as { alg: string })
    .sign(enc.encode(f.secret ?? signer.secret));
}

function claimsOf(token: string): { sub: string; agt: string; acc: string } {
  return JSON.parse(new TextDecoder().decode(base64url.decode(token.split(".")[1] as string)));
}

describe("handshake tokens on the chat endpoint", () => {
  it("accepts a token a browser got, from its own origin, and streams the echo", async () => {
    const { token } = await widget();
    const res = await chat(token, WIDGET_ORIGIN, "ping pong");
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toContain("text/event-stream");
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe(WIDGET_ORIGIN);
    expect(res.headers.get("Vary")).toContain("Origin");
    const text = await res.text();
    const deltas = [...text.matchAll(/event: delta\ndata: (.*)\n/g)].map((m) => JSON.parse(m[1] as string).text).join("");
    expect(deltas).toBe("You said: ping pong");
    expect(text).toContain("event: done");
  });

  it("verifies tokens signed with any listed key, so signing keys rotate without downtime", async () => {
    const { token } = await widget();
    expect(decodeProtectedHeader(token).kid).toBe(signer.kid);
    const byOlder = await forge(claimsOf(token), { header: { kid: older.kid }, secret: older.secret });
    expect((await chat(byOlder)).status).toBe(200);
    expect((await chat(await forge(claimsOf(token)))).status).toBe(200);
  });

  it("answers an expired token with 401 Token Expired, allowing a few seconds of skew", async () => {
    const { token } = await widget();
    const now = Math.floor(Date.now() / 1000);
    const expired = await forge(claimsOf(token), { claims: { iat: now - 700, exp: now - 60 } });
    const res = await chat(expired);
    const problem = await expectProblem(res, 401, "token_expired");
    expect(problem.title).toBe("Token Expired");
    expect(res.headers.get("WWW-Authenticate")).toContain('error="invalid_token"');
    // The widget must be able to read this answer to renew its token; no other origin may.
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe(WIDGET_ORIGIN);
    const elsewhere = await chat(expired, "https://evil.example");
    await expectProblem(elsewhere, 401, "token_expired");
    expect(elsewhere.headers.get("Access-Control-Allow-Origin")).toBeNull();
    const justNow = await forge(claimsOf(token), { claims: { iat: now - 600, exp: now - 2 } });
    expect((await chat(justNow)).status).toBe(200);
    // The longest lifetime is accepted, and an iat a little ahead of this clock is skew, not forgery.
    expect((await chat(await forge(claimsOf(token), { claims: { iat: now - 10, exp: now - 10 + 86_400 } }))).status).toBe(200);
    expect((await chat(await forge(claimsOf(token), { claims: { iat: now + 3 } }))).status).toBe(200);
  });

  it("refuses every forged, altered or malformed token with 401 invalid_token", async () => {
    const { token } = await widget();
    const base = claimsOf(token);
    const now = Math.floor(Date.now() / 1000);
    const [h, p, s] = token.split(".") as [string, string, string];
    const none = `${base64url.encode(JSON.stringify({ alg: "none", typ: TOKEN_TYPE, kid: signer.kid }))}.${p}.`;
    const flip = (part: string, i: number) => part.slice(0, i) + (part[i] === "A" ? "B" : "A") + part.slice(i + 1);
    const notObject = async (payload: string) => {
      const header = base64url.encode(JSON.stringify({ alg: "HS256", kid: signer.kid, typ: TOKEN_TYPE }));
      const body = base64url.encode(payload);
      const key = await crypto.subtle.importKey("raw", enc.encode(signer.secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
      const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(`${header}.${body}`)));
      return `${header}.${body}.${base64url.encode(sig)}`;
    };
    const cases: Record<string, string> = {
      "alg none": none,
      "alg none without signature dot": none.slice(0, -1),
      "another algorithm (HS512) with the same secret": await forge(base, { alg: "HS512" }),
      "another secret under a known kid": await forge(base, { secret: "an-attacker-secret-0123456789abcdefghij" }),
      "an unknown kid": await forge(base, { header: { kid: "nope" } }),
      "a changed byte in the header": `${flip(h, 5)}.${p}.${s}`,
      "a changed byte in the payload": `${h}.${flip(p, 10)}.${s}`,
      "a changed byte in the signature": `${h}.${p}.${flip(s, 3)}`,
      "a missing segment": `${h}.${p}`,
      "an extra segment": `${token}.${s}`,
      "a payload that is an array": await notObject("[1,2]"),
      "a payload that is a string": await notObject('"hello"'),
      "a token over 8 KB": await forge(base, { claims: { pad: "x".repeat(8 * 1024) } }),
      "another typ": await forge(base, { header: { typ: "JWT" } }),
      "another issuer": await forge(base, { claims: { iss: "someone-else" } }),
      "another audience": await forge(base, { claims: { aud: "keygate:admin" } }),
      "no jti": await forge(base, { claims: { jti: undefined } }),
      "no iat": await forge(base, { claims: { iat: undefined } }),
      "no exp": await forge(base, { claims: { exp: undefined } }),
      "an agent of another account": await forge({ ...base, acc: "acc_000000000000000000000000" }),
      "an iat ten years ahead": await forge(base, { claims: { iat: now + 10 * 365 * 86_400, exp: now + 10 * 365 * 86_400 + 600 } }),
      "an iat a minute ahead": await forge(base, { claims: { iat: now + 60 } }),
      "a lifetime beyond the longest agent TTL": await forge(base, { claims: { iat: now - 10, exp: now + 86_400 } }),
      "an exp ten years ahead": await forge(base, { claims: { exp: now + 10 * 365 * 86_400 } }),
    };
    for (const [what, bad] of Object.entries(cases)) {
      const res = await chat(bad);
      expect({ what, status: res.status }).toEqual({ what, status: 401 });
      await expectProblem(res, 401, "invalid_token");
    }
  });

  it("refuses a token used from another origin than the one it was minted for", async () => {
    const { token } = await widget();
    for (const origin of ["https://evil.example", "https://ok.example.evil.com", "http://ok.example", "null", null]) {
      const res = await chat(token, origin);
      await expectProblem(res, 401, "invalid_token");
      expect(res.headers.get("Access-Control-Allow-Origin")).toBeNull();
    }
  });
});
