import { createRoute, z } from "@hono/zod-openapi";
import { problems, routes } from "../openapi";

/**
 * GET /demo/widget?agent=agt_...: a minimal chat widget. It fetches a handshake token with the public agent id, sends a
 * message with it, renders the streamed reply and renews the token before it expires. It talks to the Keygate that
 * served it (its address is written into the page, so a copy on another site still works); `?api=` may name another
 * Keygate only if the operator listed it in DEMO_API_ORIGINS, and the Content-Security-Policy holds the page to that.
 */
const page = (nonce: string, keygate: string, others: readonly string[]) => `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keygate widget demo</title>
<style nonce="${nonce}">
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 36rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }
  #log { border: 1px solid #ccc; border-radius: 8px; padding: 1rem; min-height: 8rem; white-space: pre-wrap; }
  .you { color: #555; } .bot { color: #0a5; }
  form { display: flex; gap: .5rem; margin-top: 1rem; } input { flex: 1; padding: .5rem; } button { padding: .5rem 1rem; }
  #status { font-size: .85rem; color: #777; }
</style>
</head>
<body>
<h1>Chat</h1>
<p id="status">Connecting…</p>
<div id="log" aria-live="polite"></div>
<form id="form"><input id="message" autocomplete="off" placeholder="Say something" required><button>Send</button></form>
<script nonce="${nonce}">
(() => {
  const params = new URLSearchParams(location.search);
  const others = ${script(others)};
  const api = others.includes(params.get("api")) ? params.get("api") : ${script(keygate)};
  const agentId = params.get("agent");
  const status = (text) => { document.getElementById("status").textContent = text; };
  let token = null;
  let renewal = null;

  // Renew at 80% of the token's life, so a chat left open never sends an expired token.
  async function handshake() {
    let res;
    try {
      res = await fetch(api + "/v1/handshake", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ agentId }),
      });
    } catch {
      // A refused origin gets no CORS headers: the browser hides the answer and fetch fails.
      token = null; status("Handshake refused: this page's origin is not allowed"); return false;
    }
    if (!res.ok) { token = null; status("Handshake refused (" + res.status + ")"); return false; }
    const body = await res.json();
    token = body.token;
    clearTimeout(renewal);
    renewal = setTimeout(handshake, Math.max(5, body.expiresIn * 0.8) * 1000);
    status("Connected: token valid for " + body.expiresIn + " s");
    return true;
  }

  function line(cls, text) {
    const p = document.createElement("div");
    p.className = cls; p.textContent = text;
    document.getElementById("log").append(p);
    return p;
  }

  async function send(message, retried) {
    if (!token && !(await handshake())) return;
    const res = await fetch(api + "/v1/chat/messages", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify({ message }),
    });
    if (res.status === 401 && !retried) { token = null; return send(message, true); }
    if (!res.ok) { status("Chat refused (" + res.status + ")"); return; }
    const reply = line("bot", "");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const event = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        const data = event.split("\\n").find((l) => l.startsWith("data:"));
        if (event.includes("event: delta") && data) reply.textContent += JSON.parse(data.slice(5)).text;
        if (event.includes("event: done")) reply.dataset.done = "true";
      }
    }
  }

  document.getElementById("form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("message");
    line("you", input.value);
    send(input.value, false);
    input.value = "";
  });
  handshake();
})();
</script>
</body>
</html>
`;

/** A value as a script literal that cannot end the script element it sits in. */
function script(value: unknown): string {
  return JSON.stringify(value).replaceAll("<", "\\u003c");
}

export const demoRoutes = routes().openapi(
  createRoute({
    method: "get",
    path: "/widget",
    summary: "A minimal chat widget page (handshake, send, streamed reply, renewal)",
    request: {
      query: z.object({
        agent: z
          .string()
          .optional()
          .openapi({ param: { name: "agent", in: "query" }, example: "agt_5f0c9a1e2b7d43a8c6e1f0b2" }),
        api: z
          .string()
          .optional()
          .openapi({ param: { name: "api", in: "query" }, description: "Another Keygate, if listed in DEMO_API_ORIGINS" }),
      }),
    },
    responses: { 200: { description: "The page", content: { "text/html": { schema: z.string() } } }, ...problems() },
  }),
  (c) => {
    const nonce = crypto.randomUUID().replaceAll("-", "");
    const others = c.get("config").demoApiOrigins;
    c.header(
      "Content-Security-Policy",
      [
        "default-src 'none'",
        `script-src 'nonce-${nonce}'`,
        `style-src 'nonce-${nonce}'`,
        `connect-src 'self' ${others.join(" ")}`.trim(),
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
      ].join("; "),
    );
    return c.html(page(nonce, new URL(c.req.url).origin, others));
  },
);
