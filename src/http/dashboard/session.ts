import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { createMiddleware } from "hono/factory";
import { type Need, type Principal, refusal } from "../../core/principal";
import { admit } from "../../counters/limiter";
import type { Variables } from "../../guards/context";
import { authorizePerson, cookieClaim } from "../../people/authorize";
import { SESSION_COOKIE } from "../../people/sessions";
import type { Bindings } from "../../platform/env";
import { ApiError, refused } from "../../platform/errors";

/** The dashboard's requests: once signed in, the person's principal and email (shown in the header). */
export type DashEnv = { Bindings: Bindings; Variables: Variables & { principal: Principal; email: string } };
export type DashContext = Context<DashEnv>;

/** Exactly these attributes: `__Host-` demands Secure and Path=/ with no Domain; Lax keeps it off cross-site posts. */
const COOKIE_OPTIONS = { httpOnly: true, secure: true, sameSite: "Lax", path: "/" } as const;

export function setSessionCookie(c: Context, value: string): void {
  setCookie(c, SESSION_COOKIE, value, COOKIE_OPTIONS);
}

export function clearSessionCookie(c: Context): void {
  deleteCookie(c, SESSION_COOKIE, COOKIE_OPTIONS);
}

export function sessionCookie(c: Context): string | undefined {
  return getCookie(c, SESSION_COOKIE);
}

/**
 * The signed-in person, with what the page needs of them (the API's rules: key pages need full access, people and
 * agents need an admin); anyone else goes to the login form. A cookie that no longer works is cleared.
 */
export const signedIn = (need: Need) =>
  createMiddleware<DashEnv>(async (c, next) => {
    const cookie = sessionCookie(c);
    const claim = cookie === undefined ? null : await cookieClaim(c.get("deps"), cookie);
    const verdict = claim && (await authorizePerson(c.get("deps"), { ...claim, need }, undefined, { pool: false }));
    if (!verdict || (!verdict.ok && "code" in verdict)) {
      if (cookie !== undefined) clearSessionCookie(c);
      return c.redirect("/dashboard/login", 303);
    }
    const { principal, email } = verdict.ok ? verdict : verdict.holder;
    c.set("principal", principal);
    c.set("email", email);
    if (!verdict.ok) throw refused(verdict.refusal);
    const [spent] = verdict.spent;
    if (spent) admit(spent);
    else c.header("X-RateLimit-Status", "unavailable");
    await next();
  });

/** The session a request's cookie names, if it still works (its secret right); it spends nothing. */
export async function cookieSession(c: DashContext): Promise<{ sessionId: string; userId: string } | null> {
  const cookie = sessionCookie(c);
  const claim = cookie === undefined ? null : await cookieClaim(c.get("deps"), cookie);
  const verdict = claim && (await authorizePerson(c.get("deps"), { ...claim, need: "any", cost: 0 }, undefined, { pool: false }));
  return claim && verdict?.ok ? { sessionId: claim.sessionId, userId: claim.userId } : null;
}

/**
 * CSRF: a request that changes anything must come from a page of this Keygate. Browsers send `Origin` with every form
 * post; one from another site, or none at all, is refused before anything is read or stored. SameSite=Lax already keeps
 * the cookie off other sites' posts; this holds even where a browser does not.
 */
export const sameOrigin = createMiddleware<DashEnv>(async (c, next) => {
  if (c.req.method === "GET" || c.req.method === "HEAD") return next();
  if (c.req.header("Origin") !== new URL(c.req.url).origin) {
    throw new ApiError(
      "origin_not_allowed",
      "This form was not sent from a page of this dashboard, so nothing was changed. Go back, reload the page and try again.",
    );
  }
  await next();
});

/**
 * What one action of a page needs beyond the page's own need (an admin's form on a page members see too): the API's
 * refusal otherwise, before anything is read.
 */
export const needs = (need: Need) =>
  createMiddleware<DashEnv>(async (c, next) => {
    const refusedFor = refusal(c.get("principal"), need);
    if (refusedFor) throw refused(refusedFor);
    await next();
  });
