// The floors of src/ (README, "Code map"): a file imports only from its own floor and the floors below it, only the
// floors that speak HTTP import Hono or read a request's context, and no import circle exists between files or between
// folders. A hand-written check rather than a dependency graph tool: the rules are a dozen lines, the folder-circle
// rule is not one such tools state directly, and the TypeScript that parses these files has no JavaScript API.
import fs from "node:fs";
import path from "node:path";

const SRC = path.resolve("src");
/** Each folder's floor, lowest first; aggregates share one floor. Files directly in src/ are entrypoints. */
const FLOORS = {
  core: 0,
  platform: 1,
  counters: 2,
  keys: 3,
  users: 3,
  webhooks: 3,
  accounts: 3,
  agents: 3,
  people: 3,
  usage: 3,
  resources: 3,
  tokens: 3,
  plans: 3,
  credits: 3,
  guards: 4,
  gateway: 5,
  http: 6,
  ".": 7,
};
/** The floors that may import hono and read a request's context. */
const SPEAKS_HTTP = new Set(["guards", "gateway", "http", "."]);
const REQUEST_CONTEXT = /\b(RequestContext|CounterContext)\b/;

const files = (function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : /\.tsx?$/.test(e.name) && !e.name.endsWith(".d.ts") ? [p] : [];
  });
})(SRC);

const folderOf = (file) => {
  const rel = path.relative(SRC, file).split(path.sep);
  return rel.length === 1 ? "." : rel[0];
};
const resolve = (from, spec) => {
  const base = path.resolve(path.dirname(from), spec);
  return [base, `${base}.ts`, `${base}.tsx`, path.join(base, "index.ts"), path.join(base, "index.tsx")].find(
    (c) => fs.existsSync(c) && fs.statSync(c).isFile(),
  );
};
const show = (file) => path.relative(process.cwd(), file);

const problems = [];
const edges = new Map();
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  const folder = folderOf(file);
  if (!(folder in FLOORS)) problems.push(`${show(file)}: src/${folder}/ is on no floor (add it to scripts/floors.mjs)`);
  const targets = [];
  for (const [, spec] of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^"']*?from\s*["']([^"']+)["']/g)) {
    if (spec === "hono" || spec.startsWith("hono/")) {
      if (!SPEAKS_HTTP.has(folder)) problems.push(`${show(file)}: imports ${spec}; only guards/, gateway/ and http/ speak HTTP`);
      continue;
    }
    if (!spec.startsWith(".")) continue;
    const target = resolve(file, spec);
    if (!target) continue;
    targets.push(target);
    const to = folderOf(target);
    if (FLOORS[to] > FLOORS[folder]) problems.push(`${show(file)}: imports ${show(target)}, a floor above src/${folder}/`);
  }
  if (!SPEAKS_HTTP.has(folder) && REQUEST_CONTEXT.test(text))
    problems.push(`${show(file)}: reads a request's context; take Deps (src/platform/deps.ts) instead`);
  edges.set(file, targets);
}

/**
 * Every circle in a graph given as node -> nodes, each reported once (by its members in order), starting from its member
 * on the highest floor (`floorOf`; the first by name among equals), so a circle keeps its name whatever order the
 * search happens to meet it in.
 */
function circles(graph, floorOf) {
  const found = new Map();
  const state = new Map();
  const stack = [];
  const visit = (node) => {
    state.set(node, "open");
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === "open") {
        const loop = stack.slice(stack.indexOf(next));
        const top = loop.reduce((best, n, i) => {
          const b = loop[best];
          return floorOf(n) > floorOf(b) || (floorOf(n) === floorOf(b) && n < b) ? i : best;
        }, 0);
        found.set([...loop].sort().join(), [...loop.slice(top), ...loop.slice(0, top)]);
      } else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, "done");
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return [...found.values()];
}

for (const loop of circles(edges, (file) => FLOORS[folderOf(file)]))
  problems.push(`import circle between files: ${[...loop, loop[0]].map(show).join(" -> ")}`);
const folders = new Map();
for (const [file, targets] of edges) {
  const from = folderOf(file);
  if (!folders.has(from)) folders.set(from, new Set());
  for (const t of targets) if (folderOf(t) !== from) folders.get(from).add(folderOf(t));
}
for (const loop of circles(folders, (folder) => FLOORS[folder]))
  problems.push(`import circle between folders: ${[...loop, loop[0]].join(" -> ")}`);

if (problems.length > 0) {
  for (const p of problems) console.error(`floors: ${p}`);
  process.exit(1);
}
console.log(`floors: ${files.length} files, every import on its floor, no circle`);
