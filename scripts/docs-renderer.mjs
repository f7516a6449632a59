// Copies Redoc's standalone bundle from the `redoc` package into public/docs, where Keygate serves it (npm install runs
// this as `prepare`). The bundle draws its sidebar logo from Redocly's CDN; that one image is dropped (its component hides
// itself when the image fails), so the reference page asks nothing of another origin. A Redoc release that moves the
// logo fails here, and the browser test (test/e2e/docs.test.ts) fails on any other request to another origin.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";

const LOGO = 'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"';
const bundle = readFileSync("node_modules/redoc/bundles/redoc.standalone.js", "utf8");
if (bundle.split(LOGO).length !== 2) throw new Error(`redoc.standalone.js: expected the sidebar logo (${LOGO}) once`);
mkdirSync("public/docs", { recursive: true });
writeFileSync("public/docs/redoc.standalone.js", bundle.replace(LOGO, 'src:""'));
