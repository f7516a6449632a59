import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { expect } from "vitest";
import worker from "../../src/index";
import { checkContract } from "../contract";
import { call, ORIGIN } from "../helpers";

export const PASSWORD = "correct horse battery";
export const COOKIE = "__Host-keygate_session";

type PageInit = {
  cookie?: string;
  /** A form's fields; a list sends its field once per value (checkboxes of one name). */
  form?: Record<string, string | string[]>;
  origin?: string | null;
  headers?: Record<string, string>;
  /** Bindings replaced for this request (a D1 that counts its statements, say). */
  bindings?: Partial<Cloudflare.Env>;
};

/**
 * A browser's request to the dashboard: a GET, or a form post (from the dashboard's own origin unless `origin` says
 * otherwise; null sends none). Redirects are answered, not followed.
 */
export async function page(path: string, { cookie, form, origin = ORIGIN, headers = {}, bindings }: PageInit = {}): Promise<Response> {
  const h = new Headers(headers);
  if (!h.has("CF-Connecting-IP")) h.set("CF-Connecting-IP", `10.250.${Math.floor(Math.random() * 256)}.${Math.floor(Math.random() * 256)}`);
  // What a browser asks for when it navigates or posts a form.
  if (!h.has("Accept")) h.set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");
  if (cookie !== undefined) h.set("Cookie", `${COOKIE}=${cookie}`);
  let body: string | undefined;
  if (form) {
    h.set("Content-Type", "application/x-www-form-urlencoded");
    if (origin !== null) h.set("Origin", origin);
    body = new URLSearchParams(Object.entries(form).flatMap(([name, v]) => (Array.isArray(v) ? v : [v]).map((x) => [name, x]))).toString();
  }
  const req = new Request(ORIGIN + path, { method: form ? "POST" : "GET", headers: h, body, redirect: "manual" });
  const res = bindings === undefined ? await exports.default.fetch(req.clone()) : await withBindings(req.clone(), bindings);
  await checkContract(req, res);
  return res;
}

async function withBindings(req: Request, bindings: Partial<Cloudflare.Env>): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await worker.fetch(req, { ...env, ...bindings }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

/** A user of the account (invited by the admin's key) whose password is set through the invitation. */
export async function person(adminKey: string, role: "admin" | "member" = "member") {
  const email = `d${crypto.randomUUID().slice(0, 8)}@example.com`;
  const res = await call("/v1/users", { key: adminKey, body: { email, role } });
  expect(res.status).toBe(201);
  const user = await res.json<{ id: string; email: string; invitation: { token: string } }>();
  const accepted = await call("/v1/auth/accept-invitation", { body: { token: user.invitation.token, password: PASSWORD } });
  expect(accepted.status).toBe(200);
  return user;
}

/** Logs in through the form; answers the session cookie's value. */
export async function signIn(email: string, password = PASSWORD): Promise<string> {
  const res = await page("/dashboard/login", { form: { email, password } });
  expect(res.status, await res.clone().text()).toBe(303);
  const value = new RegExp(`^${COOKIE}=([^;]+);`).exec(res.headers.get("Set-Cookie") ?? "")?.[1];
  expect(value).toBeDefined();
  return value as string;
}

/** A page's HTML, expecting `status`. */
export async function html(res: Response, status = 200): Promise<string> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expect(res.headers.get("Content-Type")).toMatch(/^text\/html/);
  return text;
}
