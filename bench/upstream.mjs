// The upstream of the gateway scenarios: answers every request with a small JSON body. It runs in a worker thread of
// the bench so that it has an event loop of its own instead of sharing the load generator's, and ends with the bench.
import { createServer } from "node:http";
import { parentPort } from "node:worker_threads";

const body = JSON.stringify({ ok: true, items: [1, 2, 3] });
const server = createServer((req, res) => {
  req.resume();
  res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
});
// Longer than any pause between a scenario's rounds: a connection the gateway keeps in its pool is then never closed
// by this server just as the gateway reuses it, which would fail a request and abort the bench.
server.keepAliveTimeout = 120_000;
server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port));
