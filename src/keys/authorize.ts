import { hashKey, keyIdOf } from "../core/ids";
import { readKey } from "../core/key-format";
import type { AuthMethod } from "../core/principal";
import { keyRefusal, type Need, type Principal, perPerson, personal, pooled, type Refusal } from "../core/principal";
import { type Holdings, holdings } from "../counters/held";
import { leasedCall } from "../counters/leased-call";
import { type Charge, refund, spendPool } from "../counters/limiter";
import type { CallTag, Idempotency, Spending, Spent, Unspent } from "../counters/protocol";
import type { Routed } from "../counters/relay";
import type { Deps } from "../platform/deps";
import { safeError } from "../platform/log";
import type { Authorization, KeyCall, KeyObject } from "./object";
import { routedOf } from "./relay";
import { catchUp } from "./reload";
import { evaluateKey, keyIdByHash, loadKey, type VerifyResult } from "./store";

/**
 * Key hash -> key id, for keys this isolate saw exist. Immutable facts, so safe to keep; everything that can change is
 * checked by the key's object.
 */
const keyIds = new Map<string, string>();
const MAX_CACHED_KEY_IDS = 10_000;

/** A key issued before ids were worked out from hashes: its object is `key:<keyId>`. */
type Moved = { ok: false; code: "key_moved"; keyId: string };

type Refused =
  | { ok: false; code: Extract<VerifyResult, { ok: false }>["code"] | "idempotency_in_flight" | "idempotency_key_reused" }
  | { ok: false; refusal: Refusal };

/**
 * Refused by its text alone, before any read or call: `malformed`, no key of either format; `mistyped`, a checksummed
 * key whose checksum is not what the rest of it makes (a typo, a truncation, an invented key).
 */
export type Unread = { ok: false; code: "invalid_key"; unread: "malformed" | "mistyped" };

export type KeyVerdict =
  /**
   * `spent`: what the request spent, in the key's object and in its account's (the last one refused it when it was
   * refused, what the others spent given back); `unlimited` when a counter was down and the deployment fails open
   * (the caller marks its answer).
   */
  { ok: true; principal: Principal; spent: Spent[]; unlimited: boolean } | Refused | Unread;

/**
 * The one path every API key takes, whether it came with a request (the middleware, the gateway) or to the verify API:
 * its object judges the key and what the caller `need`s of it, and spends `cost` of each of its limits (or what `costs`
 * names of those it names) only when both pass; a
 * hot key is judged and spent from this isolate's lease (counters/leased-call.ts) with no call at all. The verdict on a
 * key is a result; an unavailable rate limiter in closed mode is an error (503). `ip` is the client's address
 * (`CF-Connecting-IP`, or the verify API's `clientIp`; null or absent: none), judged against the key's allowed
 * addresses wherever the key is judged, a lease included. `isolate` is replaceable in tests.
 * Every path that takes a key (headers, query parameter, gateway, verify API, service binding) comes through here, so
 * this is where a credential that cannot be a key, or a checksummed key with a wrong checksum, is refused before any
 * D1 read or object call.
 */
export async function authorizeKey(
  deps: Deps,
  {
    key,
    method,
    need: needed,
    cost = 1,
    costs,
    credits,
    reserve,
    idempotency,
    ip = null,
  }: {
    key: string;
    method: AuthMethod;
    need: Need | (() => Promise<Need>);
    idempotency?: Idempotency;
    ip?: string | null;
  } & Partial<Charge>,
  isolate?: Holdings,
): Promise<KeyVerdict> {
  const shape = readKey(key, deps.config.keyPrefixNamespace);
  if (shape === null || shape === "mistyped") return { ok: false, code: "invalid_key", unread: shape ?? "malformed" };
  const hash = await hashKey(key);
  let known = keyIds.get(hash);
  // A route whose need is worked out (a resource's owner, read from D1) first learns that the key exists, in one read as
  // before ids were worked out from hashes: a made-up key costs no read of what the route needs.
  if (known === undefined && typeof needed === "function") {
    known = await lookUpKeyId(deps, hash);
    if (known === undefined) return { ok: false, code: "invalid_key" };
  }
  const need = typeof needed === "function" ? await needed() : needed;
  /** The key's object's verdict; `byHash`: the id was worked out from the hash, which the object also looks the key up by. */
  const judge = (keyId: string, byHash?: string) => {
    const name = `key:${keyId}`;
    /**
     * Where each of these calls went (a relay, or null: the key's object), by the call's id, first place first: one that
     * failed is cancelled wherever its attempts went, one answered is cancelled where its other attempts went (their
     * answers were lost). What the isolate's ended leases left goes to the first place only (a retry elsewhere carries
     * none), so no two places take it back.
     */
    let went: Map<string, Set<string | null>> | undefined;
    /** Cancels the call `tag` wherever its attempts went but `answered` (a relay, null: the key's object). */
    const cancelAt = (
      stub: DurableObjectStub<KeyObject>,
      { tag, returned }: { tag: CallTag; returned: Unspent[] },
      answered?: string | null,
    ) =>
      Promise.all(
        [...(went?.get(tag.id) ?? [null])].map((relay, i) => {
          if (relay === answered) return undefined;
          const c = { tag, returned: i === 0 ? returned : [] };
          return relay ? deps.env.RELAYS.getByName(relay).cancel({ keyId, ...c }) : stub.cancel(c);
        }),
      );
    /**
     * One call on the key: to the relay this isolate is told to call while the key is spread (a plain call of a known
     * key: nothing only its object decides), else to its object; the answer says where the next goes.
     */
    const called = async (stub: DurableObjectStub<KeyObject>, asked: KeyCall & Spending) => {
      const held = isolate ?? holdings;
      const plain = !asked.hash && !asked.costs && !asked.reserve && !asked.idempotency && !asked.credits && !asked.perUnit;
      const relay = plain ? held.relayOf(name) : null;
      const askedAt = held.now();
      went ??= new Map();
      const places = went.get(asked.tag.id) ?? new Set<string | null>();
      const call = places.size > 0 && !places.has(relay) ? { ...asked, returned: [] } : asked;
      went.set(asked.tag.id, places.add(relay));
      const answer = relay
        ? await (deps.env.RELAYS.getByName(relay).authorize(call) as Promise<Routed<Principal, Refused>>)
        : routedOf(await (stub.authorize(call) as Promise<Authorization>));
      if (places.size > 1) {
        const returned = asked.returned ?? [];
        deps.waitUntil(
          cancelAt(stub, { tag: asked.tag, returned }, relay).catch((e: unknown) =>
            deps.log("warn", "counter_cancel_failed", { counter: name, error: safeError(e) }),
          ),
        );
      }
      if (answer.ok) held.route(name, answer.relays, askedAt);
      return answer;
    };
    return leasedCall<DurableObjectStub<KeyObject>, Principal, Refused | Moved>(
      deps,
      {
        name,
        stub: deps.env.KEYS.getByName(name),
        cost,
        credits,
        reserve,
        idempotency,
        ask: async (stub, spending) => {
          await catchUp(stub, name);
          return called(stub, { keyId, hash: byHash, method, need, ip, ...spending });
        },
        renew: (stub, spending) => called(stub, { keyId, method, need: "any", anyAddress: true, ...spending }),
        check: (principal) => {
          const refused = keyRefusal(principal, need, ip);
          return refused && { ok: false, refusal: refused };
        },
        cancel: async (stub, call) => {
          await cancelAt(stub, call);
        },
        costs,
      },
      isolate,
    );
  };
  // No lookup: the key's object is named by the id its hash gives (or the one this isolate learnt), and reads the key
  // itself when cold. A key issued before ids came from hashes answers with its own id once, remembered here.
  const keyId = known ?? (await keyIdOf(hash));
  let answer = judge(keyId, known === undefined ? hash : undefined);
  let verdict = answer instanceof Promise ? await answer : answer;
  if (verdict !== null && !verdict.ok && "keyId" in verdict) {
    remember(hash, verdict.keyId);
    answer = judge(verdict.keyId);
    verdict = answer instanceof Promise ? await answer : answer;
    if (verdict !== null && !verdict.ok && "keyId" in verdict) return { ok: false, code: "invalid_key" };
  } else if (verdict?.ok && known === undefined) remember(hash, keyId);
  if (verdict === null) {
    // Open mode with the object down: the key is checked in D1 and the request goes through unlimited.
    const result = evaluateKey(await loadKey(deps.db, { hash }), deps.now());
    if (!result.ok) return result;
    const refused = keyRefusal(result.principal, need, ip);
    return refused ? { ok: false, refusal: refused } : { ok: true, principal: result.principal, spent: [], unlimited: true };
  }
  if (!verdict.ok) return verdict;
  const principal = verdict.record;
  const spent = await withPool(deps, principal, verdict.spent, { cost, costs, credits, reserve }, isolate);
  return "code" in spent ? spent : { ok: true, principal, ...spent };
}

/**
 * Spends the request's charge from its account's object too, when the account shares limits or keeps a pool, and from
 * the person's object when the account limits each person or gives each a balance, once the key's object admitted it:
 * all spent, or nothing (refused by one, what the others spent is given back first). A session's request spent the
 * person's share in the person's object already (`person: false`).
 */
export async function withPool(
  deps: Deps,
  principal: Principal,
  first: Spent,
  charge: Charge,
  isolate?: Holdings,
  { person = true } = {},
): Promise<{ spent: Spent[]; unlimited: boolean } | { ok: false; code: "invalid_key" }> {
  // A retry already charged spends nothing anywhere.
  if (!first.allowed || first.replayed) return { spent: [first], unlimited: false };
  const { accountId, userId } = principal;
  const owners = [
    ...(pooled(principal) ? [{ accountId }] : []),
    ...(person && personal(principal)
      ? [{ accountId, person: { userId, limits: perPerson(principal), credits: principal.credits.user } }]
      : []),
  ];
  const spent = [first];
  let unlimited = false;
  for (const owner of owners) {
    const more = await spendPool(deps, owner, charge, isolate);
    if (more === null) {
      unlimited = true;
      continue;
    }
    if ("code" in more || !more.allowed) {
      for (const s of spent) await refund(deps, s, isolate);
      return "code" in more ? more : { spent: [more], unlimited: false };
    }
    spent.push(more);
  }
  return { spent, unlimited };
}

async function lookUpKeyId(deps: Deps, hash: string): Promise<string | undefined> {
  const id = await keyIdByHash(deps.db, hash);
  if (id !== undefined) remember(hash, id);
  return id;
}

function remember(hash: string, id: string): void {
  if (keyIds.size >= MAX_CACHED_KEY_IDS) keyIds.delete(keyIds.keys().next().value as string);
  keyIds.set(hash, id);
}
