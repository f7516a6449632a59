import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { ACCESS_AUDIENCE, ACCESS_TYPE } from "../../src/tokens/access";
import { AUDIENCE, ISSUER, TOKEN_TYPE } from "../../src/tokens/handshake";
import { call, chat, expectProblem, provision, SIGNING_KEYS, widget } from "../helpers";

const [signer] = SIGNING_KEYS as [{ kid: string; secret: string }];

/** A token signed with Keygate's own key, its claims as given. */
function signed(typ: string, claims: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: ISSUER, jti: crypto.randomUUID(), iat: now, exp: now + 600, ...claims })
    .setProtectedHeader({ alg: "HS256", kid: signer.kid, typ })
    .sign(new TextEncoder().encode(signer.secret));
}

/** A person's live session: its access token's claims. */
async function session(): Promise<{ sub: string; acc: string; sid: string }> {
  const { account, key } = await provision();
  const res = await call("/v1/users", {
    key: key.key,
    body: { email: `jwt-${crypto.randomUUID().slice(0, 8)}@example.com`, role: "admin" },
  });
  const user = await res.json<{ id: string; email: string; invitation: { token: string } }>();
  const password = "correct horse battery";
  expect((await call("/v1/auth/accept-invitation", { body: { token: user.invitation.token, password } })).status).toBe(200);
  const login = await call("/v1/auth/login", { body: { email: user.email, password } });
  const { refresh_token } = await login.json<{ refresh_token: string }>();
  return { sub: user.id, acc: account.id, sid: refresh_token.split(".")[0] as string };
}

describe("the audience of Keygate's tokens", () => {
  it("takes a handshake token whose aud is its audience, and refuses one whose aud is an array holding it", async () => {
    const { token } = await widget();
    const { sub, agt, acc, origin } = JSON.parse(atob((token.split(".")[1] as string).replace(/-/g, "+").replace(/_/g, "/")));
    expect((await chat(await signed(TOKEN_TYPE, { sub, agt, acc, origin, aud: AUDIENCE }))).status).toBe(200);
    for (const aud of [[AUDIENCE], [AUDIENCE, "keygate:access"]]) {
      await expectProblem(await chat(await signed(TOKEN_TYPE, { sub, agt, acc, origin, aud })), 401, "invalid_token");
    }
  });

  it("takes an access token whose aud is its audience, and refuses one whose aud is an array holding it", async () => {
    const claims = await session();
    expect((await call("/v1/whoami", { key: await signed(ACCESS_TYPE, { ...claims, aud: ACCESS_AUDIENCE }) })).status).toBe(200);
    for (const aud of [[ACCESS_AUDIENCE], [ACCESS_AUDIENCE, AUDIENCE]]) {
      const token = await signed(ACCESS_TYPE, { ...claims, aud });
      await expectProblem(await call("/v1/whoami", { key: token }), 401, "invalid_token");
      await expectProblem(await call("/v1/auth/refresh", { method: "POST", key: token }), 401, "invalid_token");
    }
  });
});
