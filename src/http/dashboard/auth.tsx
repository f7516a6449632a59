import { Hono } from "hono";
import { spendPerAddress } from "../../counters/limiter";
import { passwordAttempts } from "../../guards/spending";
import { acceptInvitation } from "../../people/invitations";
import { AcceptInvitation, LoginRequest } from "../../people/schemas";
import { cookieLogin, endSessions } from "../../people/sessions";
import type { ApiError } from "../../platform/errors";
import { fieldErrors, invalidRequest } from "../../platform/errors";
import { field, formOf, Layout, Notice, ProblemBox, problemOf } from "./layout";
import { render } from "./render";
import { clearSessionCookie, cookieSession, type DashContext, type DashEnv, setSessionCookie } from "./session";

type LoginState = { email?: string; accountId?: string; askAccount?: boolean; problem?: ApiError | null; notice?: string | null };

const LoginPage = ({ email = "", accountId = "", askAccount = false, problem, notice }: LoginState) => (
  <Layout title="Log in">
    <Notice text={notice} />
    <ProblemBox problem={problem} />
    <form class="card narrow" method="post" action="/dashboard/login">
      <label for="email">Email</label>
      <input id="email" name="email" type="email" autocomplete="username" required value={email} />
      <label for="password">Password</label>
      <input id="password" name="password" type="password" autocomplete="current-password" required />
      {askAccount && (
        <>
          <label for="accountId">Account id</label>
          <input id="accountId" name="accountId" required value={accountId} aria-describedby="accountId-hint" />
          <p id="accountId-hint" class="hint">
            This email belongs to users of several accounts: enter the id of the one to log in to (acc_…).
          </p>
        </>
      )}
      <button type="submit">Log in</button>
    </form>
  </Layout>
);

const NOTICES: Record<string, string> = { logout: "You are logged out." };

/** Log in (a cookie session), log out, and set a password with an invitation. */
export const authPages = new Hono<DashEnv>()
  .get("/login", async (c) => {
    // Already signed in: straight to the keys.
    if (await cookieSession(c)) return c.redirect("/dashboard/keys", 303);
    return render(c, <LoginPage notice={NOTICES[c.req.query("done") ?? ""]} />);
  })
  .post("/login", async (c) => {
    const form = await formOf(c);
    const email = field(form, "email");
    const accountId = field(form, "accountId");
    const input = { email, password: typeof form.password === "string" ? form.password : "", ...(accountId ? { accountId } : {}) };
    const again = (problem: ApiError) =>
      render(
        c,
        <LoginPage
          email={email}
          accountId={accountId}
          askAccount={accountId !== "" || problem.code === "account_required"}
          problem={problem}
        />,
        problem,
      );
    const parsed = LoginRequest.safeParse(input);
    if (!parsed.success) return again(invalidRequest(fieldErrors(parsed.error)));
    try {
      setSessionCookie(c, await cookieLogin(c.get("deps"), passwordAttempts(c), parsed.data, c.req.header("User-Agent") ?? null));
    } catch (err) {
      return again(problemOf(err));
    }
    return c.redirect("/dashboard/keys", 303);
  })
  .post("/logout", async (c) => {
    const session = await cookieSession(c);
    if (session) await endSessions(c.get("deps"), session, "logout");
    clearSessionCookie(c);
    return c.redirect("/dashboard/login?done=logout", 303);
  })
  .get("/accept-invitation", (c) => render(c, <InvitationPage />))
  .post("/accept-invitation", async (c) => acceptForm(c));

type InvitationState = { problem?: ApiError | null; done?: string };

const InvitationPage = ({ problem, done }: InvitationState) => (
  <Layout title="Set your password">
    <ProblemBox problem={problem} />
    {done !== undefined ? (
      <div class="card narrow">
        <p>
          The password of <strong>{done}</strong> is set.
        </p>
        <p>
          <a class="button" href="/dashboard/login">
            Log in
          </a>
        </p>
      </div>
    ) : (
      <form class="card narrow" method="post" action="/dashboard/accept-invitation">
        {/* The link carries the token in its fragment (never sent to a server); the script moves it here and hides it. */}
        <div id="token-field">
          <label for="token">Invitation code</label>
          <input id="token" name="token" required autocomplete="off" aria-describedby="token-hint" />
          <p id="token-hint" class="hint">
            The part of your invitation link after <code>#token=</code>.
          </p>
        </div>
        <label for="password">New password</label>
        <input id="password" name="password" type="password" autocomplete="new-password" required minlength={12} maxlength={256} />
        <p class="hint">12 to 256 characters; not your email, not a common password.</p>
        <label for="confirm">Repeat the password</label>
        <input id="confirm" name="confirm" type="password" autocomplete="new-password" required />
        <button type="submit">Set password</button>
      </form>
    )}
  </Layout>
);

/** The same rules and answers as POST /v1/auth/accept-invitation, the repeated password besides. */
async function acceptForm(c: DashContext): Promise<Response> {
  const form = await formOf(c);
  const password = typeof form.password === "string" ? form.password : "";
  const again = (problem: ApiError) => render(c, <InvitationPage problem={problem} />, problem);
  if (password !== form.confirm) return again(invalidRequest([{ field: "confirm", message: "is not the same password" }]));
  const parsed = AcceptInvitation.safeParse({ token: field(form, "token"), password });
  if (!parsed.success) return again(invalidRequest(fieldErrors(parsed.error)));
  try {
    const { email } = await acceptInvitation(c.get("deps"), parsed.data.token, parsed.data.password);
    return render(c, <InvitationPage done={email} />);
  } catch (err) {
    const problem = problemOf(err);
    // Guessing invitations spends the address's failure budget, as on the API.
    if (
      problem.code === "invalid_invitation" &&
      !(await spendPerAddress(c.get("deps"), c.req.header("CF-Connecting-IP"), "ip", c.get("config").ipPolicy))
    )
      c.header("X-RateLimit-Status", "unavailable");
    return again(problem);
  }
}
