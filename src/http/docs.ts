/** Where Keygate serves the reference renderer: Redoc's standalone bundle, copied from the `redoc` package into public/. */
export const RENDERER = "/docs/redoc.standalone.js";

/**
 * The reference page: Redoc renders /openapi.json (navigation, search, parameters, example requests and answers, and
 * the document's introduction to authentication, errors and paging). Everything comes from this Keygate.
 */
export const REFERENCE_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keygate API reference</title>
</head>
<body>
<noscript>The reference needs JavaScript. The contract itself: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</noscript>
<redoc spec-url="/openapi.json"></redoc>
<script src="${RENDERER}"></script>
</body>
</html>`;

/**
 * Only this origin: its script and its document. Redoc writes its styles into the page (inline styles), draws icons
 * as data: images and runs its search index in a blob: worker.
 */
export const REFERENCE_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "worker-src blob:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");
