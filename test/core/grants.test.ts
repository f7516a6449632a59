import { describe, expect, it } from "vitest";
import { GRANT, grantOf, parseGrant, RESOURCE_ID, RESOURCE_TYPE, reaches, rightsProblems, SCOPE } from "../../src/core/grants";

describe("the grant grammar", () => {
  it("reads a grant as its type and id, and nothing else as a grant", () => {
    expect(parseGrant("mailbox:mbx_1")).toEqual({ type: "mailbox", id: "mbx_1" });
    expect(parseGrant("project:A.b-c_9")).toEqual({ type: "project", id: "A.b-c_9" });
    for (const text of [
      "*",
      "mailbox",
      "mailbox:",
      ":mbx_1",
      "Mailbox:mbx_1",
      "9box:x",
      "mailbox:_x",
      "mailbox:a:b",
      " mailbox:x",
      "mailbox:x ",
    ])
      expect(parseGrant(text), text).toBeNull();
    expect(parseGrant(`${"a".repeat(32)}:${"b".repeat(128)}`)).not.toBeNull();
    expect(parseGrant(`${"a".repeat(33)}:b`)).toBeNull();
    expect(parseGrant(`a:${"b".repeat(129)}`)).toBeNull();
  });

  it("writes what it reads", () => {
    expect(parseGrant(grantOf("mailbox", "mbx_1"))).toEqual({ type: "mailbox", id: "mbx_1" });
    expect(GRANT.test(grantOf("mailbox", "mbx_1"))).toBe(true);
  });

  it("names types and ids as grants spell them; a list's entry is a grant or *", () => {
    expect(RESOURCE_TYPE.test("mailbox2")).toBe(true);
    for (const t of ["", "Mailbox", "2box", "mail_box", "a".repeat(33)]) expect(RESOURCE_TYPE.test(t), t).toBe(false);
    expect(RESOURCE_ID.test("mbx.1-a_b")).toBe(true);
    for (const id of ["", "-x", "a/b", "a b", "b".repeat(129)]) expect(RESOURCE_ID.test(id), id).toBe(false);
    expect(SCOPE.test("*")).toBe(true);
    expect(SCOPE.test("mailbox:mbx_1")).toBe(true);
    for (const s of ["**", "*:x", "mailbox", "mailbox:*"]) expect(SCOPE.test(s), s).toBe(false);
  });

  it("reaches a resource with its very grant or with full access, never with another grant", () => {
    expect(reaches(["*"], "mailbox:mbx_1")).toBe(true);
    expect(reaches(["mailbox:mbx_1"], "mailbox:mbx_1")).toBe(true);
    expect(reaches(["mailbox:mbx_2", "project:mbx_1"], "mailbox:mbx_1")).toBe(false);
    expect(reaches(["mailbox:mbx_10"], "mailbox:mbx_1")).toBe(false);
    expect(reaches([], "mailbox:mbx_1")).toBe(false);
  });

  it("refuses unknown types and * beside grants, naming the entry", () => {
    expect(rightsProblems(["mailbox:a", "project:b"], ["mailbox", "project"])).toEqual([]);
    expect(rightsProblems(["*"], [])).toEqual([]);
    expect(rightsProblems(["mailbox:a", "folder:b"], ["mailbox"])).toEqual([
      { index: 1, message: 'must be "*" or grants of the form <type>:<id> with a type among: mailbox' },
    ]);
    expect(rightsProblems(["folder:b"], [])[0]?.message).toContain("(none configured)");
    expect(rightsProblems(["*", "mailbox:a"], ["mailbox"])).toEqual([
      { index: null, message: '"*" (full access) cannot be combined with resource grants' },
    ]);
  });
});
