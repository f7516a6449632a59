import type { Context } from "hono";
import type { Child, FC, PropsWithChildren } from "hono/jsx";
import type { Principal } from "../../core/principal";
import { type ApiError, apiErrorOf, invalidRequest } from "../../platform/errors";

/**
 * Every dashboard page: styles and script from this Keygate only (see POLICY), nothing inline. Navigation and the
 * logout button when someone is signed in.
 */
export const Layout: FC<
  PropsWithChildren<{ title: string; who?: { principal: Principal; email: string } | undefined; current?: string }>
> = ({ title, who, current, children }) => (
  <html lang="en">
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      {/* Not no-referrer (Keygate's header): with it, browsers send `Origin: null` on form posts, which sameOrigin refuses. */}
      <meta name="referrer" content="same-origin" />
      <title>{`${title} · Keygate`}</title>
      <link rel="stylesheet" href="/dashboard/dashboard.css" />
      <script src="/dashboard/dashboard.js" defer />
    </head>
    <body>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="/dashboard">
          Keygate
        </a>
        {who && (
          <>
            <nav aria-label="Dashboard">
              {PAGES.filter((p) => !p.admin || who.principal.role === "admin").map((p) => (
                <a href={p.href} aria-current={current === p.href ? "page" : undefined}>
                  {p.label}
                </a>
              ))}
            </nav>
            <form class="who" method="post" action="/dashboard/logout">
              <span>
                {who.email} <span class="badge">{who.principal.role}</span>
              </span>
              <button type="submit" class="link">
                Log out
              </button>
            </form>
          </>
        )}
      </header>
      <main id="main">
        <h1>{title}</h1>
        {children}
      </main>
    </body>
  </html>
);

const PAGES = [
  { href: "/dashboard/keys", label: "API keys", admin: false },
  { href: "/dashboard/usage", label: "Usage", admin: false },
  { href: "/dashboard/users", label: "Users", admin: true },
  { href: "/dashboard/agents", label: "Agents", admin: true },
  { href: "/dashboard/webhooks", label: "Webhooks", admin: true },
  { href: "/dashboard/activity", label: "Activity", admin: false },
];

/** The problem an action ran into: its detail and each field's message, never a stack. */
export const ProblemBox: FC<{ problem: ApiError | null | undefined }> = ({ problem }) =>
  problem ? (
    <div class="alert error" role="alert">
      <p>{problem.detail}</p>
      {problem.extra.errors && problem.extra.errors.length > 0 && (
        <ul>
          {problem.extra.errors.map((e) => (
            <li>
              <code>{e.field}</code> {e.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  ) : null;

export const Notice: FC<{ text: string | null | undefined }> = ({ text }) =>
  text ? (
    <div class="alert ok" role="status">
      <p>{text}</p>
    </div>
  ) : null;

/**
 * A secret shown this once (a new key, an invitation link, an agent's identity secret), with a copy button. `kept`: what
 * Keygate keeps of it, when that is more than a hash (a webhook's secret, which signs every delivery).
 */
export const Secret: FC<{ id: string; title: string; value: string; kept?: string; children?: Child }> = ({
  id,
  title,
  value,
  kept = "Keygate keeps only a hash of it.",
  children,
}) => (
  <section class="secret" aria-labelledby={`${id}-title`}>
    <h2 id={`${id}-title`}>{title}</h2>
    <p class="warning">
      <strong>Copy it now: you won't see it again.</strong> {kept}
    </p>
    <div class="secret-value">
      <code id={id}>{value}</code>
      <button type="button" data-copy={id} hidden>
        Copy
      </button>
    </div>
    {children}
  </section>
);

/** A list as a table: its column headings (`""` is the actions column, named for screen readers only) and its rows. */
export const Table: FC<{ columns: (string | false)[]; children?: Child }> = ({ columns, children }) => (
  <div class="table-wrap">
    <table>
      <thead>
        <tr>
          {columns
            .filter((name) => name !== false)
            .map((name) =>
              name === "" ? (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              ) : (
                <th scope="col">{name}</th>
              ),
            )}
        </tr>
      </thead>
      <tbody>{children}</tbody>
    </table>
  </div>
);

/** Whether a user or an agent is enabled, as a status badge. */
export const Enabled: FC<{ disabled: boolean }> = ({ disabled }) => (
  <span class={`status ${disabled ? "disabled" : "enabled"}`}>{disabled ? "disabled" : "enabled"}</span>
);

/** An instant as people read it, in UTC, with the exact value for machines. */
export const Time: FC<{ at: string | null; empty?: string }> = ({ at, empty = "Never" }) =>
  at === null ? <span class="muted">{empty}</span> : <time datetime={at}>{`${at.slice(0, 10)} ${at.slice(11, 16)} UTC`}</time>;

/** A link to the next (older) page of a list, keeping the page's other parameters. */
export const Pager: FC<{ path: string; next: string | null }> = ({ path, next }) =>
  next === null ? null : (
    <p class="pager">
      <a href={`${path}?cursor=${encodeURIComponent(next)}`}>Older →</a>
    </p>
  );

/** The ApiError behind a failed action (drizzle wraps what the database layer throws); anything else is not ours to show. */
export function problemOf(err: unknown): ApiError {
  const known = apiErrorOf(err);
  if (!known) throw err;
  return known;
}

/** The form a page posted; one that cannot be read (a malformed multipart body, say) is 400 `invalid_request`. */
export async function formOf(c: Context, options?: { all: true }): Promise<Record<string, unknown>> {
  try {
    return await c.req.parseBody(options);
  } catch {
    throw invalidRequest([{ field: "body", message: "is not a form that can be read" }]);
  }
}

/** A form's text field, trimmed; absent or a file is empty. */
export function field(form: Record<string, unknown>, name: string): string {
  const value = form[name];
  return typeof value === "string" ? value.trim() : "";
}

/** Content-Security-Policy of every dashboard page: only this Keygate's own stylesheet and script, forms to itself. */
export const POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join("; ");
