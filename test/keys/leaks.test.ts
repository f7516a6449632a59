import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { hashKey } from "../../src/core/ids";
import { call, callWith, createKey, expectProblem, provision, rows } from "../helpers";

/** A P-256 key pair standing for GitHub's, with its public key as GitHub publishes it (PEM, SPKI). */
async function githubKey(id: string) {
  const pair = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"])) as CryptoKeyPair;
  const spki = new Uint8Array((await crypto.subtle.exportKey("spki", pair.publicKey)) as ArrayBuffer);
  const pem = `-----BEGIN PUBLIC KEY-----\n${btoa(String.fromCharCode(...spki))}\n-----END PUBLIC KEY-----\n`;
  return { id, pair, published: { key_identifier: id, key: pem, is_current: true } };
}

/** An ECDSA signature as GitHub sends it: ASN.1 DER, base64 (WebCrypto makes the raw r‖s form). */
async function sign(key: CryptoKey, body: string): Promise<string> {
  const raw = new Uint8Array(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key, new TextEncoder().encode(body)));
  const integer = (bytes: Uint8Array) => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const trimmed = bytes.subarray(i);
    const padded = (trimmed[0] as number) & 0x80 ? [0, ...trimmed] : [...trimmed];
    return [0x02, padded.length, ...padded];
  };
  const seq = [...integer(raw.subarray(0, 32)), ...integer(raw.subarray(32))];
  return btoa(String.fromCharCode(0x30, seq.length, ...seq));
}

/** A report, answered once what it set off after its answer is done. */
const report = (body: unknown, ip = "203.0.113.9") => callWith({}, "/v1/leaks", { body, headers: { "CF-Connecting-IP": ip } });

describe("anyone can report a leaked key", () => {
  it("answers the same for a real key and a made-up one, so it is no oracle", async () => {
    const { key } = await provision();
    const real = await report({ key: key.key, url: "https://gist.example/x" }, "203.0.113.10");
    const fake = await report({ key: `${key.key.slice(0, -4)}beef` }, "203.0.113.11");
    expect([real.status, fake.status]).toEqual([202, 202]);
    expect(await real.json()).toEqual(await fake.json());
    const names = (r: Response) => [...r.headers.keys()].filter((h) => !/request-id|ratelimit/i.test(h)).sort();
    expect(names(real)).toEqual(names(fake));
    await expectProblem(await report({ key: "" }), 400, "invalid_request");
  });

  it("by default marks the key (leakedAt), audits where it was seen, tells the endpoints, and the key keeps working", async () => {
    const { account, key } = await provision();
    const other = await createKey(key.key, { name: "pasted" });
    expect((await report({ key: other.key, url: "https://gist.example/abc" }, "203.0.113.12")).status).toBe(202);
    const read = await (await call(`/v1/api-keys/${other.id}`, { key: key.key })).json<{ leakedAt: string | null; status: string }>();
    expect(read.leakedAt).toEqual(expect.any(String));
    expect(read.status).toBe("active");
    expect((await call("/v1/whoami", { key: other.key })).status).toBe(200);
    expect(await rows("SELECT actor, detail FROM audit_events WHERE account_id = ? AND action = 'key.leaked'", account.id)).toEqual([
      { actor: "keygate", detail: "report: https://gist.example/abc" },
    ]);
    const [event] = await rows<{ data: string }>(
      "SELECT data FROM webhook_events WHERE account_id = ? AND type = 'api_key.leaked'",
      account.id,
    );
    expect(JSON.parse(event?.data as string)).toMatchObject({
      key: { id: other.id, name: "pasted" },
      source: "report",
      url: "https://gist.example/abc",
      response: "notified",
    });
    expect(event?.data).not.toContain(other.key);
    // A second report of the same key changes nothing more.
    await report({ key: other.key }, "203.0.113.13");
    expect(await rows("SELECT id FROM audit_events WHERE account_id = ? AND action = 'key.leaked'", account.id)).toHaveLength(1);
  });

  it("with leakResponse revoke, revokes it at once, even the account's last lasting key", async () => {
    const { account, key } = await provision();
    const set = await call("/v1/account", { method: "PATCH", key: key.key, body: { leakResponse: "revoke" } });
    expect(await set.json()).toMatchObject({ leakResponse: "revoke" });
    expect((await call("/v1/whoami", { key: key.key })).status).toBe(200);
    await callWith({}, "/v1/leaks", { body: { key: key.key }, headers: { "CF-Connecting-IP": "203.0.113.14" } });
    await expectProblem(await call("/v1/whoami", { key: key.key }), 401, "key_revoked");
    const [row] = await rows<{ revoked_by: string; leaked_at: string }>("SELECT revoked_by, leaked_at FROM api_keys WHERE id = ?", key.id);
    expect(row?.revoked_by).toBe("keygate");
    expect(row?.leaked_at).toEqual(expect.any(String));
    const [event] = await rows<{ data: string }>(
      "SELECT data FROM webhook_events WHERE account_id = ? AND type = 'api_key.leaked'",
      account.id,
    );
    expect(JSON.parse(event?.data as string)).toMatchObject({ response: "revoked" });
  });

  it("is limited per client address", async () => {
    const statuses = [];
    for (let i = 0; i < 11; i++) statuses.push((await report({ key: "nothing" }, "203.0.113.99")).status);
    expect(statuses.slice(0, 10).every((s) => s === 202)).toBe(true);
    expect(statuses[10]).toBe(429);
  });
});

describe("GitHub secret scanning alerts", () => {
  it("a forged signature changes nothing; a real alert is labelled by hash and revokes the key at once", async () => {
    const github = await githubKey("gh-1");
    const stranger = await githubKey("gh-1");
    const keys = JSON.stringify({ public_keys: [github.published] });
    const { key } = await provision();
    expect((await call("/v1/account", { method: "PATCH", key: key.key, body: { leakResponse: "revoke" } })).status).toBe(200);
    const body = JSON.stringify([
      { token: key.key, type: "keygate_api_key", url: "https://github.com/o/r/blob/main/.env", source: "content" },
      { token: "rm_madeup", type: "keygate_api_key", url: "https://github.com/o/r", source: "content" },
    ]);
    const alert = (signature: string, id = "gh-1") =>
      callWith({ SECRET_SCANNING_KEYS: keys }, "/v1/leaks/github", {
        body,
        headers: { "Github-Public-Key-Identifier": id, "Github-Public-Key-Signature": signature },
      });

    await expectProblem(await alert(await sign(stranger.pair.privateKey, body)), 401, "invalid_signature");
    await expectProblem(await alert(await sign(github.pair.privateKey, body), "gh-2"), 401, "invalid_signature");
    await expectProblem(await alert("bm90IGEgc2lnbmF0dXJl"), 401, "invalid_signature");
    expect((await call("/v1/whoami", { key: key.key })).status).toBe(200);
    expect(await rows("SELECT leaked_at FROM api_keys WHERE id = ?", key.id)).toEqual([{ leaked_at: null }]);

    const res = await alert(await sign(github.pair.privateKey, body));
    expect(res.status).toBe(200);
    const feedback = await res.json();
    expect(feedback).toEqual([
      { token_hash: await hashKey(key.key), token_type: "keygate_api_key", label: "true_positive" },
      { token_hash: await hashKey("rm_madeup"), token_type: "keygate_api_key", label: "false_positive" },
    ]);
    expect(JSON.stringify(feedback)).not.toContain(key.key);
    await expectProblem(await call("/v1/whoami", { key: key.key }), 401, "key_revoked");
    const [audit] = await rows<{ detail: string }>("SELECT detail FROM audit_events WHERE target = ? AND action = 'key.leaked'", key.id);
    expect(audit?.detail).toBe("github: https://github.com/o/r/blob/main/.env");
  });

  it("acts on every real key of one alert as its account chose, each once, however many matches name it", async () => {
    const github = await githubKey("gh-many");
    const keys = JSON.stringify([github.published]);
    const revoking = await provision();
    expect((await call("/v1/account", { method: "PATCH", key: revoking.key.key, body: { leakResponse: "revoke" } })).status).toBe(200);
    const notifying = await provision();
    const doomed = await Promise.all(Array.from({ length: 3 }, () => createKey(revoking.key.key)));
    const marked = await Promise.all(Array.from({ length: 3 }, () => createKey(notifying.key.key)));
    const tokens = [...doomed, ...marked].map((k) => k.key);
    // Each real key twice (two places it was seen), among made-up tokens.
    const matches = [...tokens, ...tokens, "rm_madeup_1", "rm_madeup_2"].map((token, i) => ({
      token,
      type: "keygate_api_key",
      url: `https://github.com/o/r/blob/main/f${i}`,
      source: "content",
    }));
    const body = JSON.stringify(matches);
    const res = await callWith({ SECRET_SCANNING_KEYS: keys }, "/v1/leaks/github", {
      body,
      headers: { "Github-Public-Key-Identifier": "gh-many", "Github-Public-Key-Signature": await sign(github.pair.privateKey, body) },
    });
    expect(res.status).toBe(200);
    const labels = (await res.json<{ label: string }[]>()).map((f) => f.label);
    expect(labels.filter((l) => l === "true_positive")).toHaveLength(12);
    for (const k of doomed) await expectProblem(await call("/v1/whoami", { key: k.key }), 401, "key_revoked");
    for (const k of marked) expect((await call("/v1/whoami", { key: k.key })).status).toBe(200);
    const ids = [...doomed, ...marked].map((k) => k.id);
    const stored = await rows<{ id: string; leaked_at: string | null; revoked_by: string | null }>(
      `SELECT id, leaked_at, revoked_by FROM api_keys WHERE id IN (${ids.map(() => "?").join(", ")})`,
      ...ids,
    );
    for (const k of stored) {
      expect(k.leaked_at).not.toBeNull();
      expect(k.revoked_by).toBe(doomed.some((d) => d.id === k.id) ? "keygate" : null);
    }
    // One audit entry and one event per key, naming where it was first seen.
    for (const [account, made] of [
      [revoking, doomed],
      [notifying, marked],
    ] as const) {
      const audited = await rows<{ target: string; detail: string }>(
        "SELECT target, detail FROM audit_events WHERE account_id = ? AND action = 'key.leaked'",
        account.account.id,
      );
      expect(audited.map((a) => a.target).sort()).toEqual(made.map((k) => k.id).sort());
      for (const a of audited)
        expect(a.detail).toBe(
          `github: https://github.com/o/r/blob/main/f${tokens.indexOf(made.find((k) => k.id === a.target)?.key as string)}`,
        );
      const told = await rows("SELECT id FROM webhook_events WHERE account_id = ? AND type = 'api_key.leaked'", account.account.id);
      expect(told).toHaveLength(3);
    }
  });

  it("answers an alert of 1,000 matches, and is off without SECRET_SCANNING_KEYS", async () => {
    const github = await githubKey("gh-big");
    const body = JSON.stringify(
      Array.from({ length: 1000 }, (_, i) => ({
        token: `rm_${i}`,
        type: "keygate_api_key",
        url: "https://github.com/o/r",
        source: "content",
      })),
    );
    const res = await callWith({ SECRET_SCANNING_KEYS: JSON.stringify([github.published]) }, "/v1/leaks/github", {
      body,
      headers: { "Github-Public-Key-Identifier": "gh-big", "Github-Public-Key-Signature": await sign(github.pair.privateKey, body) },
    });
    expect(res.status).toBe(200);
    const feedback = await res.json<{ label: string }[]>();
    expect(feedback).toHaveLength(1000);
    expect(feedback.every((f) => f.label === "false_positive")).toBe(true);
    const off = await callWith({ SECRET_SCANNING_KEYS: "" }, "/v1/leaks/github", { body: "[]" });
    await expectProblem(off, 404, "not_found");
    expect(env.SECRET_SCANNING_KEYS ?? "").toBe("");
  });
});
