import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKeygate } from "../../scripts/keygate-server.mjs";

// The document as the built worker serves it, checked by an OpenAPI validator (which needs Node: it compiles schemas).
let keygate: Awaited<ReturnType<typeof startKeygate>>;

beforeAll(async () => {
  keygate = await startKeygate({ port: 0, bindings: { ALLOW_HTTP: "true" } });
});

afterAll(async () => {
  await keygate?.mf.dispose();
});

describe("GET /openapi.json", () => {
  it("is a valid OpenAPI 3.1 document", async () => {
    const res = await fetch(`${keygate.url}/openapi.json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string };
    expect(doc.openapi).toBe("3.1.0");
    const result = await new Validator().validate(doc);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
  });
});
