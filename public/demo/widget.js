// The chat widget of the demo page: fetches a handshake token with the public agent id (`?agent=`), sends messages with
// it, renders the streamed reply and renews the token before it expires. It talks to the Keygate that served this
// script, or to `?api=`; the page's Content-Security-Policy lets it reach only the origins the operator allowed.
(() => {
  const params = new URLSearchParams(location.search);
  const api = params.get("api") ?? new URL(document.currentScript.src).origin;
  const agentId = params.get("agent");
  const status = (text) => {
    document.getElementById("status").textContent = text;
  };
  let token = null;
  let renewal = null;

  // Renew at 80% of the token's life, so a chat left open never sends an expired token.
  async function handshake() {
    let res;
    try {
      res = await fetch(`${api}/v1/handshake`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ agentId }),
      });
    } catch {
      // A refused origin gets no CORS headers (the browser hides the answer), and a Keygate the page's policy does not
      // allow is never contacted: either way fetch fails.
      token = null;
      status("Handshake refused: this page may not talk to that Keygate, or its origin is not allowed");
      return false;
    }
    if (!res.ok) {
      token = null;
      status(`Handshake refused (${res.status})`);
      return false;
    }
    const body = await res.json();
    token = body.token;
    clearTimeout(renewal);
    renewal = setTimeout(handshake, Math.max(5, body.expiresIn * 0.8) * 1000);
    status(`Connected: token valid for ${body.expiresIn} s`);
    return true;
  }

  function line(cls, text) {
    const p = document.createElement("div");
    p.className = cls;
    p.textContent = text;
    document.getElementById("log").append(p);
    return p;
  }

  async function send(message, retried) {
    if (!token && !(await handshake())) return;
    const res = await fetch(`${api}/v1/chat/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ message }),
    });
    if (res.status === 401 && !retried) {
      token = null;
      return send(message, true);
    }
    if (!res.ok) {
      status(`Chat refused (${res.status})`);
      return;
    }
    const reply = line("bot", "");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split("\n").find((l) => l.startsWith("data:"));
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
