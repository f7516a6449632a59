import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKeygate } from "../../scripts/keygate-server.mjs";
import { launchChromium } from "./browser";

let keygate: Awaited<ReturnType<typeof startKeygate>>;
let browser: Browser;

beforeAll(async () => {
  keygate = await startKeygate({ port: 0, bindings: { ALLOW_HTTP: "true" } });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await keygate?.mf.dispose();
});

describe("the API reference in a real browser", () => {
  it("renders every operation of the served document, its introduction and examples, asking nothing of another origin", async () => {
    const page = await browser.newPage();
    const requests: string[] = [];
    const refused: string[] = [];
    page.on("request", (r) => requests.push(r.url()));
    page.on("console", (m) => {
      if (m.type() === "error") refused.push(m.text());
    });
    await page.goto(`${keygate.url}/docs`);
    await page.getByRole("heading", { name: "Create a key" }).first().waitFor({ timeout: 30_000 });
    const doc = (await (await fetch(`${keygate.url}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { operationId: string }>>;
    };
    // Each operation has its own section, found by its operationId, and the navigation links to it.
    for (const item of Object.values(doc.paths))
      for (const op of Object.values(item))
        expect(await page.locator(`[id$="/${op.operationId}"]`).count(), op.operationId).toBeGreaterThan(0);
    for (const section of ["Authentication", "Errors", "Paging"]) await page.getByRole("heading", { name: section }).first().waitFor();
    // An example request body, generated from the schema, is shown.
    expect(await page.getByText('"name": "string"').count()).toBeGreaterThan(0);
    expect(requests.filter((url) => !url.startsWith(keygate.url) && !/^(data|blob):/.test(url))).toEqual([]);
    expect(refused.filter((text) => /Content Security Policy/i.test(text))).toEqual([]);
    await page.close();
  });
});
