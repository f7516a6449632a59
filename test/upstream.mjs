// A real upstream for the gateway tests, run by vitest's config in Node on 127.0.0.1 (an ephemeral port). It answers
// what it received, so tests can see exactly what the gateway forwards.
import { createServer } from "node:http";
import { receive } from "./receiver.mjs";

/** Bytes received so far per upload id, and releases waited for by streaming answers. */
const uploads = new Map();
const releases = new Map();

function released(id) {
  let entry = releases.get(id);
  if (!entry) {
    let release;
    entry = { promise: new Promise((r) => (release = r)), release: () => release() };
    releases.set(id, entry);
  }
  return entry;
}

/** Starts the upstream; resolves with its origin. The server does not keep the process alive. */
export async function startUpstream() {
  const server = createServer((req, res) => {
    // A client that gives up (the gateway's timeout) aborts the request: nothing to answer then.
    answer(req, res).catch(() => res.destroy());
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  server.unref();
  return `http://127.0.0.1:${server.address().port}`;
}

async function answer(req, res) {
  const url = new URL(req.url, "http://upstream");
  if (await receive(req, res, url)) return;
  const [, kind, id] = url.pathname.split("/");
  if (kind === "probe")
    return res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ bytes: uploads.get(id) ?? 0 }));
  if (kind === "release") {
    released(id).release();
    return res.writeHead(204).end();
  }
  if (kind === "slow") {
    await new Promise((r) => setTimeout(r, Number(url.searchParams.get("ms") ?? 1000)));
  }
  if (kind === "events") {
    // One event now, the next only once the test releases it: a gateway that buffers never shows the first.
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-store" });
    res.write("event: first\ndata: 1\n\n");
    await released(id).promise;
    res.end("event: second\ndata: 2\n\n");
    return;
  }
  if (kind === "status") {
    return res.writeHead(Number(id), { "Content-Type": "text/plain", "X-Upstream": "yes" }).end(`status ${id}`);
  }
  if (kind === "redirect") return res.writeHead(302, { Location: "/elsewhere" }).end();
  let bytes = 0;
  const chunks = [];
  for await (const chunk of req) {
    bytes += chunk.length;
    if (kind === "upload") uploads.set(id, bytes);
    chunks.push(chunk);
  }
  // What a provider's API says of the resources a request created or deleted, cookies it sets (a JSON list of
  // Set-Cookie values) and a header its Connection names, as the test asks it to.
  const asked = {};
  if (req.headers["x-test-created"]) asked["Keygate-Resource-Created"] = req.headers["x-test-created"];
  if (req.headers["x-test-deleted"]) asked["Keygate-Resource-Deleted"] = req.headers["x-test-deleted"];
  // What the request cost, as a metered upstream says once it has done the work.
  if (req.headers["x-test-credits-used"]) asked["Keygate-Credits-Used"] = req.headers["x-test-credits-used"];
  if (req.headers["x-test-set-cookie"]) asked["Set-Cookie"] = JSON.parse(req.headers["x-test-set-cookie"]);
  // A header of the answer its Connection names: for this hop only.
  if (req.headers["x-test-hop"]) Object.assign(asked, { Connection: "keep-alive, X-Upstream-Hop", "X-Upstream-Hop": "1" });
  res.writeHead(Number(req.headers["x-test-status"] ?? 200), {
    "Content-Type": "application/json",
    "X-Upstream": "yes",
    Connection: "keep-alive",
    "Keep-Alive": "timeout=5",
    ...asked,
  });
  res.end(
    JSON.stringify({
      method: req.method,
      url: req.url,
      headers: req.headers,
      bytes,
      body: bytes <= 65536 ? Buffer.concat(chunks).toString("utf8") : null,
    }),
  );
}
