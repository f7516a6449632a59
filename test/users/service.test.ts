import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Principal } from "../../src/core/principal";
import { makeDeps } from "../../src/platform/deps";
import { emailsOf, getUser, listUsers } from "../../src/users/service";
import { createUser, provision } from "../helpers";

describe("what the users service shows a principal", () => {
  it("an admin every user of the account, a member only themselves, and nobody another account's users", async () => {
    const { account, admin, key } = await provision();
    const member = await createUser(key.key, "member");
    const other = await provision();
    const deps = makeDeps(env, createExecutionContext());
    const as = (userId: string, role: Principal["role"]): Principal => ({
      accountId: account.id,
      keyId: null,
      userId,
      role,
      scopes: ["*"],
      accountSlug: null,
      keyPrefix: account.keyPrefix,
      limits: [{ name: "default", limit: 100, windowSeconds: 60 }],
      credits: { key: null, account: null, user: null },
      shared: [],
    });
    const [asAdmin, asMember] = [as(admin.id, "admin"), as(member.id, "member")];
    const everyone = [admin.id, member.id, other.admin.id];
    const page = { limit: 100, after: null };

    expect((await listUsers(deps, asAdmin, page)).rows.map((u) => u.id).sort()).toEqual([admin.id, member.id].sort());
    expect([...(await emailsOf(deps, asAdmin, everyone)).keys()].sort()).toEqual([admin.id, member.id].sort());
    await expect(getUser(deps, asAdmin, other.admin.id)).rejects.toMatchObject({ code: "not_found" });

    expect((await listUsers(deps, asMember, page)).rows.map((u) => u.id)).toEqual([member.id]);
    expect([...(await emailsOf(deps, asMember, everyone)).keys()]).toEqual([member.id]);
    await expect(getUser(deps, asMember, admin.id)).rejects.toMatchObject({ code: "not_found" });
  });
});
