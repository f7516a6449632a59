// A webhook receiver written from the Standard Webhooks specification alone, with Node's crypto (nothing of Keygate's
// code): it verifies every delivery it gets and keeps what it saw, so tests can read it back. Endpoints live under
// /hooks/<name>: POST .../config sets its secrets and how (and how late) it answers; GET .../received lists the deliveries.
import { createHmac, createPublicKey, timingSafeEqual, verify as verifySignature } from "node:crypto";

/** How far a delivery's timestamp may be from now, as the specification suggests (5 minutes). */
const TOLERANCE_S = 300;

const endpoints = new Map();

function endpoint(name) {
  let e = endpoints.get(name);
  if (!e) {
    e = { secrets: [], publicKey: null, fail: 0, status: 500, retryAfter: null, delayMs: 0, received: [] };
    endpoints.set(name, e);
  }
  return e;
}

/** Whether `header` carries a valid `v1` signature of `id.timestamp.body` under one of the secrets (or `v1a` under the key). */
export function verifyDelivery({ id, timestamp, signature, body }, secrets, publicKey, now = Date.now() / 1000) {
  if (!id || !timestamp || !signature) return "missing headers";
  if (!/^\d+$/.test(timestamp) || Math.abs(now - Number(timestamp)) > TOLERANCE_S) return "timestamp out of tolerance";
  const content = Buffer.from(`${id}.${timestamp}.${body}`);
  for (const part of signature.split(" ")) {
    const [version, value] = part.split(",", 2);
    if (version === "v1") {
      for (const secret of secrets) {
        const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
        const expected = createHmac("sha256", key).update(content).digest();
        const given = Buffer.from(value ?? "", "base64");
        if (given.length === expected.length && timingSafeEqual(given, expected)) return "ok";
      }
    }
    if (
      version === "v1a" &&
      publicKey &&
      verifySignature(null, content, createPublicKey({ key: publicKey, format: "jwk" }), Buffer.from(value ?? "", "base64"))
    )
      return "ok";
  }
  return "no valid signature";
}

/** Answers a request under /hooks; false when the path is not one. */
export async function receive(req, res, url) {
  const [, hooks, name, action] = url.pathname.split("/");
  if (hooks !== "hooks" || !name) return false;
  const e = endpoint(name);
  let body = "";
  for await (const chunk of req) body += chunk;
  if (action === "config") {
    Object.assign(e, JSON.parse(body));
    res.writeHead(204).end();
    return true;
  }
  if (action === "received") {
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(e.received));
    return true;
  }
  const headers = {
    id: req.headers["webhook-id"],
    timestamp: req.headers["webhook-timestamp"],
    signature: req.headers["webhook-signature"],
    body,
  };
  // A slow endpoint: answers only after `delayMs`.
  if (e.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, e.delayMs));
  const verdict = verifyDelivery(headers, e.secrets, e.publicKey);
  const failing = e.fail > 0;
  if (failing) e.fail -= 1;
  const status = verdict !== "ok" ? 400 : failing ? e.status : 204;
  e.received.push({ ...headers, verdict, status, contentType: req.headers["content-type"], body: JSON.parse(body || "null") });
  res.writeHead(status, failing && e.retryAfter ? { "Retry-After": String(e.retryAfter) } : {}).end();
  return true;
}
