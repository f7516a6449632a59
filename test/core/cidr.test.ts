import { describe, expect, it } from "vitest";
import { allows, clientAddress, formatBlock, intersect, parseAddress, parseBlock } from "../../src/core/cidr";

const block = (text: string) => {
  const b = parseBlock(text);
  if ("error" in b) throw new Error(`${text}: ${b.error}`);
  return formatBlock(b);
};
const error = (text: string) => {
  const b = parseBlock(text);
  return "error" in b ? b.error : null;
};
const allowed = (list: string[], ip: string | null) => {
  const address = clientAddress(ip);
  return address !== null && allows(list.map(block), address);
};

describe("CIDR blocks", () => {
  it("stores each block as its network and prefix, a bare address as one host", () => {
    expect(block("203.0.113.7")).toBe("203.0.113.7/32");
    expect(block(" 10.0.0.0/8 ")).toBe("10.0.0.0/8");
    expect(block("0.0.0.0/0")).toBe("0.0.0.0/0");
    expect(block("2001:DB8:0:0:0:0:0:1")).toBe("2001:db8::1/128");
    expect(block("2001:db8::/32")).toBe("2001:db8::/32");
    expect(block("::/0")).toBe("::/0");
    expect(block("::1")).toBe("::1/128");
    // RFC 5952: the longest run of zero words is the one shortened, the first of equal runs, never a single word.
    expect(block("2001:0:0:1:0:0:0:1")).toBe("2001:0:0:1::1/128");
    expect(block("2001:db8:0:0:1:0:0:1")).toBe("2001:db8::1:0:0:1/128");
    expect(block("2001:db8:0:1:1:1:1:1")).toBe("2001:db8:0:1:1:1:1:1/128");
    expect(block("64:ff9b::192.0.2.33")).toBe("64:ff9b::c000:221/128");
  });

  it("refuses what is not a block, naming the block meant when only host bits are wrong", () => {
    expect(error("10.1.2.3/8")).toBe("has bits set past its /8 prefix; the block is 10.0.0.0/8");
    expect(error("2001:db8::1/32")).toBe("has bits set past its /32 prefix; the block is 2001:db8::/32");
    expect(error("10.0.0.0/33")).toBe("must have a prefix length from 0 to 32");
    expect(error("2001:db8::/129")).toBe("must have a prefix length from 0 to 128");
    for (const bad of ["10.0.0.0/08", "10.0.0.0/", "10.0.0.0/-1"]) expect(error(bad), bad).toContain("prefix");
    for (const bad of [
      "256.0.0.1",
      "10.0.0",
      "10.0.0.01",
      "1.2.3.4.5",
      "",
      "localhost",
      "fe80::1%eth0",
      "1:2:3:4:5:6:7:8:9",
      "1::2::3",
      ":1::",
      "12345::",
      "::1.2.3",
    ])
      expect(error(bad), bad).toMatch(/^must be an IPv4 or IPv6 address/);
    expect(error("::ffff:10.0.0.0/104")).toBe("is an IPv4-mapped IPv6 block; write it as IPv4");
    expect(error("::ffff:0:0/96")).toBe("is an IPv4-mapped IPv6 block; write it as IPv4");
    // Wider than the mapped range: an IPv6 block like any other.
    expect(block("::/80")).toBe("::/80");
  });

  it("matches IPv4 at the edges of a block", () => {
    expect(allowed(["192.0.2.0/24"], "192.0.2.0")).toBe(true);
    expect(allowed(["192.0.2.0/24"], "192.0.2.255")).toBe(true);
    expect(allowed(["192.0.2.0/24"], "192.0.1.255")).toBe(false);
    expect(allowed(["192.0.2.0/24"], "192.0.3.0")).toBe(false);
    // A prefix that ends inside a byte.
    expect(allowed(["10.0.0.128/25"], "10.0.0.127")).toBe(false);
    expect(allowed(["10.0.0.128/25"], "10.0.0.128")).toBe(true);
    expect(allowed(["172.16.0.0/12"], "172.31.255.255")).toBe(true);
    expect(allowed(["172.16.0.0/12"], "172.32.0.0")).toBe(false);
    expect(allowed(["203.0.113.7"], "203.0.113.7")).toBe(true);
    expect(allowed(["203.0.113.7"], "203.0.113.8")).toBe(false);
    expect(allowed(["0.0.0.0/0"], "255.255.255.255")).toBe(true);
  });

  it("matches IPv6 at the edges of a block, in any spelling of the address", () => {
    expect(allowed(["2001:db8::/32"], "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")).toBe(true);
    expect(allowed(["2001:db8::/32"], "2001:DB9::")).toBe(false);
    expect(allowed(["2001:db8::/31"], "2001:db9::1")).toBe(true);
    expect(allowed(["2001:db8::/33"], "2001:db8:8000::")).toBe(false);
    expect(allowed(["2001:db8::1"], "2001:0db8:0000:0000:0000:0000:0000:0001")).toBe(true);
    expect(allowed(["::/0"], "::")).toBe(true);
  });

  it("keeps the families apart, an IPv4-mapped client being the IPv4 one", () => {
    expect(allowed(["::/0"], "203.0.113.7")).toBe(false);
    expect(allowed(["0.0.0.0/0"], "2001:db8::1")).toBe(false);
    expect(allowed(["203.0.113.0/24"], "::ffff:203.0.113.7")).toBe(true);
    expect(allowed(["203.0.113.0/24"], "::ffff:cb00:7107")).toBe(true);
    expect(allowed(["::/0"], "::ffff:203.0.113.7")).toBe(false);
  });

  it("matches no missing or unreadable client address", () => {
    for (const ip of [null, "", "not-an-ip", "1.1.1.1, 2.2.2.2", "203.0.113.7/32", "fe80::1%eth0"]) {
      expect(clientAddress(ip), String(ip)).toBeNull();
      expect(allowed(["0.0.0.0/0", "::/0"], ip)).toBe(false);
    }
    expect(parseAddress("203.0.113.7")).toEqual(Uint8Array.from([203, 0, 113, 7]));
  });

  it("intersects two lists: the smaller of each nested pair, nothing of disjoint ones", () => {
    expect(intersect(["10.0.0.0/8", "2001:db8::/32"], ["10.1.0.0/16", "192.0.2.0/24"])).toEqual(["10.1.0.0/16"]);
    expect(intersect(["10.1.2.3/32"], ["10.0.0.0/8"])).toEqual(["10.1.2.3/32"]);
    expect(intersect(["10.0.0.0/8"], ["192.0.2.0/24"])).toEqual([]);
    expect(intersect(["0.0.0.0/0"], ["::/0"])).toEqual([]);
  });
});
