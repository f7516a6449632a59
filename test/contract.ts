import { exports } from "cloudflare:workers";
import { dereference, type Schema, validate } from "@cfworker/json-schema";

type Header = { required?: boolean; $ref?: string };
type Response_ = { content?: Record<string, { schema?: Schema }>; headers?: Record<string, Header> };
type Operation = {
  operationId?: string;
  security?: Record<string, string[]>[];
  requestBody?: { content: Record<string, { schema?: Schema }> };
  responses: Record<string, Response_>;
};
type Document = { paths: Record<string, Record<string, Operation>>; components: { headers?: Record<string, Header> } };

/** One operation of the served document. */
export type Documented = { method: string; path: string; pattern: RegExp; operation: Operation };

/** Where the document's own `$ref`s (`#/components/...`) resolve. */
const BASE = new URL("https://keygate.test/openapi.json");

let served: Promise<{ doc: Document; operations: Documented[]; lookup: Record<string, Schema | boolean> }> | undefined;

/**
 * The document as Keygate serves it at /openapi.json, fetched once per test file, with its operations (literal paths
 * before templated ones, so `/demo/widget` is not taken for `/demo/{file}`) and the index its `$ref`s resolve in.
 */
export function contract() {
  served ??= (async () => {
    const res = await exports.default.fetch(
      new Request(new URL("/openapi.json", BASE), { headers: { "CF-Connecting-IP": "10.255.255.254" } }),
    );
    if (res.status !== 200) throw new Error(`/openapi.json answered ${res.status}`);
    const doc = await res.json<Document>();
    const operations = Object.entries(doc.paths)
      .flatMap(([path, item]) =>
        Object.entries(item).map(([method, operation]) => ({
          method: method.toUpperCase(),
          path,
          pattern: new RegExp(`^${path.replace(/\{[^/]+\}/g, "[^/]+")}$`),
          operation,
        })),
      )
      .sort((a, b) => (a.path.match(/\{/g)?.length ?? 0) - (b.path.match(/\{/g)?.length ?? 0));
    return { doc, operations, lookup: dereference(doc as unknown as Schema, Object.create(null), BASE) };
  })();
  return served;
}

/** Throws unless `schema` of the served document accepts `value`, by a standard JSON Schema (2020-12) validator. */
async function conforms(value: unknown, schema: Schema, what: string): Promise<void> {
  const result = validate(value, schema, "2020-12", (await contract()).lookup, false);
  if (!result.valid) throw new Error(`${what} its contract refuses: ${JSON.stringify(result.errors.slice(-6))}`);
}

/**
 * A form's fields as its schema reads them: a field sent more than once (checkboxes of one name), or one the schema
 * says is an array, is the list of its values, as OpenAPI's `form` style with `explode` sends an array.
 */
function formFields(body: string, schema: Schema): Record<string, unknown> {
  const params = new URLSearchParams(body);
  const properties = (schema as { properties?: Record<string, { type?: unknown }> }).properties ?? {};
  return Object.fromEntries(
    [...new Set(params.keys())].map((name) => {
      const values = params.getAll(name);
      return [name, properties[name]?.type === "array" || values.length > 1 ? values : values[0]];
    }),
  );
}

/**
 * Throws unless the answer carries the secure headers and is one the served document promises for its operation: a
 * listed status, a listed media type, its required headers, and for JSON a body its schema accepts (problems included,
 * so a code the route's list lacks fails). A request Keygate accepted must be one the document accepts too, so a
 * client generated from it can send it. Paths no documented operation matches (unknown paths, other methods) have
 * nothing to check.
 */
export async function checkContract(req: Request, res: Response): Promise<void> {
  const { pathname } = new URL(req.url);
  if (res.headers.get("X-Content-Type-Options") !== "nosniff") throw new Error(`${req.method} ${pathname} answered without nosniff`);
  const { doc, operations } = await contract();
  const route = operations.find((r) => r.method === req.method && r.pattern.test(pathname));
  if (!route) return;
  const where = `${req.method} ${pathname} answered ${res.status}`;
  const sent = (req.headers.get("Content-Type") ?? "").split(";")[0]?.trim() ?? "";
  const accepted = route.operation.requestBody?.content[sent]?.schema;
  if (res.status < 300 && accepted) {
    const body = await req.clone().text();
    await conforms(sent === "application/json" ? JSON.parse(body) : formFields(body, accepted), accepted, `${where} to a body`);
  }
  const answer = route.operation.responses[String(res.status)];
  if (!answer) throw new Error(`${where}, a status its contract does not list`);
  for (const [name, header] of Object.entries(answer.headers ?? {})) {
    const { required } = header.$ref ? (doc.components.headers?.[header.$ref.split("/").pop() as string] ?? {}) : header;
    if (required && !res.headers.has(name)) throw new Error(`${where} without its header ${name}`);
  }
  const type = (res.headers.get("Content-Type") ?? "").split(";")[0]?.trim() ?? "";
  // An answer documented with no body (204) must have none.
  if (!answer.content && !type && (await res.clone().text()) === "") return;
  const media = answer.content?.[type];
  if (!media) throw new Error(`${where} as ${type}, a media type its contract does not list`);
  if (!type.endsWith("json") || !media.schema) return;
  await conforms(await res.clone().json(), media.schema, `${where} with a body`);
}
