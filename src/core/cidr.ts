// IPv4 and IPv6 addresses and CIDR blocks, as bytes (4 or 16), for a key's allowed addresses. Written here rather than
// taken from npm: the whole job is ~100 lines of byte maths, it must run in workerd without Node's `net`, and the
// libraries that do it either need Node or carry far more than matching.

/** A CIDR block: its network address (host bits zero) and prefix length. */
export type Block = { bytes: Uint8Array; bits: number };

/** The most blocks a key's or an account's list may hold. */
export const MAX_ALLOWED_IPS = 100;

const V4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const WORD = /^[0-9a-fA-F]{1,4}$/;
const PREFIX = /^(?:0|[1-9]\d{0,2})$/;

/** Dotted IPv4, each part 0-255 without leading zeros (which some parsers read as octal). */
function v4(text: string): number[] | null {
  const m = V4.exec(text);
  if (!m) return null;
  const parts = m.slice(1) as string[];
  if (parts.some((p) => p.length > 1 && p.startsWith("0"))) return null;
  const bytes = parts.map(Number);
  return bytes.every((b) => b <= 255) ? bytes : null;
}

/** IPv6 in any RFC 4291 text form (`::` once at most, a dotted IPv4 tail allowed); no zone (`%eth0`). */
function v6(text: string): number[] | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  const head = groups(halves[0] as string);
  const tail = halves.length === 2 ? groups(halves[1] as string) : [];
  const last = halves.length === 2 ? tail : head;
  let dotted: number[] = [];
  if (last.at(-1)?.includes(".")) {
    const quad = v4(last.pop() as string);
    if (!quad) return null;
    dotted = quad;
  }
  if (![...head, ...tail].every((g) => WORD.test(g))) return null;
  const words = head.length + tail.length + dotted.length / 2;
  if (halves.length === 2 ? words > 7 : words !== 8) return null;
  const bytes = (list: string[]) => list.flatMap((g) => [Number.parseInt(g, 16) >> 8, Number.parseInt(g, 16) & 255]);
  return [...bytes(head), ...new Array<number>((8 - words) * 2).fill(0), ...bytes(tail), ...dotted];
}

/** An address's bytes (4 for IPv4, 16 for IPv6), or null when `text` is neither. */
export function parseAddress(text: string): Uint8Array | null {
  const bytes = text.includes(":") ? v6(text) : v4(text);
  return bytes && Uint8Array.from(bytes);
}

/** `::ffff:a.b.c.d`: an IPv4 client seen through IPv6. */
function mapped(bytes: Uint8Array): boolean {
  return bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 255 && bytes[11] === 255;
}

/**
 * The client's address as blocks are matched against it, or null when `text` is none: an IPv4-mapped IPv6 address is
 * the IPv4 client it stands for.
 */
export function clientAddress(text: string | null | undefined): Uint8Array | null {
  const bytes = text ? parseAddress(text.trim()) : null;
  return bytes && mapped(bytes) ? bytes.slice(12) : bytes;
}

/** An address as text: dotted IPv4, or IPv6 in RFC 5952's form (lowercase, the longest run of zero words as `::`). */
export function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  const words = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i] as number) << 8) | (bytes[2 * i + 1] as number));
  let [start, length] = [-1, 1];
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > length) [start, length] = [i, j - i];
    i = j;
  }
  const hex = (list: number[]) => list.map((w) => w.toString(16)).join(":");
  return start < 0 ? hex(words) : `${hex(words.slice(0, start))}::${hex(words.slice(start + length))}`;
}

/** Whether `address` lies in `block` (of the same family). */
export function contains(block: Block, address: Uint8Array): boolean {
  if (address.length !== block.bytes.length) return false;
  const whole = block.bits >> 3;
  for (let i = 0; i < whole; i++) if (address[i] !== block.bytes[i]) return false;
  const rest = block.bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((address[whole] as number) & mask) === block.bytes[whole];
}

/**
 * A CIDR block as sent (`203.0.113.0/24`, `2001:db8::/32`, or a bare address: one host, /32 or /128), or why it is
 * not one. A block with bits set past its prefix is refused, naming the block it may have meant: `10.1.2.3/8` is more
 * likely a typo than a wish for all of 10/8. IPv4-mapped IPv6 blocks are refused too: an IPv4 client is matched by IPv4
 * blocks only.
 */
export function parseBlock(text: string): Block | { error: string } {
  const [address, prefix, ...more] = text.trim().split("/");
  const bytes = more.length === 0 && address !== undefined ? parseAddress(address) : null;
  if (!bytes) return { error: "must be an IPv4 or IPv6 address or CIDR block, such as 203.0.113.0/24 or 2001:db8::/32" };
  const max = bytes.length * 8;
  if (prefix !== undefined && !(PREFIX.test(prefix) && Number(prefix) <= max))
    return { error: `must have a prefix length from 0 to ${max}` };
  const bits = prefix === undefined ? max : Number(prefix);
  const network = Uint8Array.from(bytes, (b, i) =>
    i * 8 >= bits ? 0 : i * 8 + 8 <= bits ? b : b & ((0xff << (8 - (bits - i * 8))) & 0xff),
  );
  if (mapped(network) && bits >= 96) return { error: "is an IPv4-mapped IPv6 block; write it as IPv4" };
  if (!network.every((b, i) => b === bytes[i]))
    return { error: `has bits set past its /${bits} prefix; the block is ${formatBlock({ bytes: network, bits })}` };
  return { bytes: network, bits };
}

/** A block as stored and shown: its network address and prefix, always both. */
export function formatBlock(block: Block): string {
  return `${formatAddress(block.bytes)}/${block.bits}`;
}

/** Whether every address of `inner` lies in `outer`. */
export function within(inner: Block, outer: Block): boolean {
  return inner.bytes.length === outer.bytes.length && inner.bits >= outer.bits && contains(outer, inner.bytes);
}

/** Stored blocks (canonical text) as blocks; one that does not parse (never written so) matches nothing. */
export function blocks(list: readonly string[]): Block[] {
  return list.flatMap((text) => {
    const block = parseBlock(text);
    return "error" in block ? [] : [block];
  });
}

/**
 * The addresses both lists allow, as blocks: two blocks are either disjoint or one lies in the other, so the
 * intersection is the smaller of each nested pair. Empty when they share no address.
 */
export function intersect(a: readonly string[], b: readonly string[]): string[] {
  const [x, y] = [blocks(a), blocks(b)];
  const both = x.flatMap((p) => y.flatMap((q) => (within(p, q) ? [p] : within(q, p) ? [q] : [])));
  return [...new Set(both.map(formatBlock))];
}

/** Parsed lists, kept while their list is (a principal's, held by a key's object or an isolate's lease). */
const parsed = new WeakMap<readonly string[], Block[]>();

/** Whether `address` lies in one of the blocks of `list` (stored canonical text). */
export function allows(list: readonly string[], address: Uint8Array): boolean {
  let known = parsed.get(list);
  if (!known) {
    known = blocks(list);
    parsed.set(list, known);
  }
  return known.some((block) => contains(block, address));
}
