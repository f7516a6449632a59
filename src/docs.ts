const METHODS = ["get", "post", "patch", "put", "delete"] as const;

/** The parts of an OpenAPI document the reference page shows. */
type Schema = { $ref?: string; type?: unknown; items?: Schema };
type Content = Record<string, { schema?: Schema }>;
type Operation = {
  summary?: string;
  description?: string;
  security?: Record<string, string[]>[];
  requestBody?: { content?: Content };
  responses?: Record<string, { description?: string; content?: Content }>;
};
type Document = {
  openapi: string;
  info: { title: string; description?: string };
  paths?: Record<string, Partial<Record<(typeof METHODS)[number], Operation>>>;
  components?: { schemas?: Record<string, unknown> };
};

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** Inline code spans of the descriptions (`code`), everything else escaped. */
function prose(s: string | undefined): string {
  return escapeHtml(s ?? "").replace(/`([^`]+)`/g, "<code>$1</code>");
}

/** The document's introduction: its `## ` headings, `- ` lists, **bold** and code spans; everything else escaped. */
function markdown(s: string | undefined): string {
  return (s ?? "")
    .split("\n\n")
    .map((block) => {
      const inline = (t: string) => prose(t).replace(/\*\*([^*]+)\*\*/g, "<b>$1</b>");
      if (block.startsWith("## ")) {
        const [heading, ...rest] = block.split("\n");
        return `<h2>${inline((heading as string).slice(3))}</h2>${rest.length ? markdown(rest.join("\n")) : ""}`;
      }
      const lines = block.split("\n");
      if (lines.every((l) => l.startsWith("- "))) return `<ul>${lines.map((l) => `<li>${inline(l.slice(2))}</li>`).join("")}</ul>`;
      const first = lines.findIndex((l) => l.startsWith("- "));
      if (first > 0) return `<p>${inline(lines.slice(0, first).join(" "))}</p>${markdown(lines.slice(first).join("\n"))}`;
      return `<p>${inline(block)}</p>`;
    })
    .join("");
}

function schemaName(schema: Schema | undefined): string {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.replace("#/components/schemas/", "");
  return schema.type === "array" && schema.items ? `${schemaName(schema.items)}[]` : String(schema.type ?? "object");
}

function operation(method: string, path: string, op: Operation): string {
  const body = Object.values(op.requestBody?.content ?? {})[0]?.schema;
  const security = (op.security ?? []).map((s) => Object.keys(s)[0] ?? "none").join(" or ") || "none";
  const responses = Object.entries(op.responses ?? {})
    .map(([status, r]) => {
      const schema = Object.values(r.content ?? {})[0]?.schema;
      return `<li><b>${status}</b> ${prose(r.description)}${schema ? ` <i>${escapeHtml(schemaName(schema))}</i>` : ""}</li>`;
    })
    .join("");
  return `<section id="${escapeHtml(`${method}-${path}`)}"><h3><span class="m">${method.toUpperCase()}</span> ${escapeHtml(path)}</h3>
<p>${prose(op.summary)}</p>${op.description ? `<p>${prose(op.description)}</p>` : ""}
<p>Credentials: ${escapeHtml(security)}${body ? ` · Body: <a href="#schema-${escapeHtml(schemaName(body))}">${escapeHtml(schemaName(body))}</a>` : ""}</p>
<ul>${responses}</ul></section>`;
}

/** A readable reference page of the OpenAPI document, all on one page, with no script and nothing fetched from elsewhere. */
export function reference(generated: object): string {
  // The document this app generates: its request bodies and responses are objects, never references.
  const doc = generated as Document;
  const operations = Object.entries(doc.paths ?? {}).flatMap(([path, item]) =>
    METHODS.flatMap((m) => {
      const op = item[m];
      return op ? [operation(m, path, op)] : [];
    }),
  );
  const schemas = Object.entries(doc.components?.schemas ?? {})
    .map(
      ([name, s]) =>
        `<section id="schema-${escapeHtml(name)}"><h3>${escapeHtml(name)}</h3><pre>${escapeHtml(JSON.stringify(s, null, 2))}</pre></section>`,
    )
    .join("");
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(doc.info.title)} API reference</title><style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }
section { border-top: 1px solid #ddd; padding: .5rem 0; } .m { font-family: monospace; background: #eef; padding: 0 .3rem; }
pre { background: #f6f6f6; padding: .5rem; overflow-x: auto; font-size: 13px; } code { background: #f3f3f3; padding: 0 .2rem; }
</style></head><body><h1>${escapeHtml(doc.info.title)} API reference</h1>${markdown(doc.info.description)}
<p>The machine-readable contract: <a href="/openapi.json">/openapi.json</a> (OpenAPI ${escapeHtml(doc.openapi)}).</p>
<h2>Endpoints</h2>${operations.join("")}<h2>Schemas</h2>${schemas}</body></html>`;
}
