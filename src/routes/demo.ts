import { Hono } from "hono";
import type { AppEnv } from "../env";

/**
 * GET /demo/widget?agent=agt_...&api=https://keygate.example: a minimal chat widget. It fetches a handshake token with
 * the public agent id, sends a message with it, renders the streamed reply and renews the token before it expires.
 * `api` defaults to the page's own origin, so the page also works when copied to another site.
 */
const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keygate widget demo</title>
<style>
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
<script>
(() => {
  const params = new URLSearchParams(location.search);
  const api = params.get("api") || location.origin;
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

export const demoRoutes = new Hono<AppEnv>().get("/widget", (c) => c.html(PAGE));
