import { existsSync } from "node:fs";
import chromiumBinary from "@sparticuz/chromium";
import { type Browser, chromium } from "playwright-core";

/** Where distributions put Chromium (or Chrome). */
const SYSTEM = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome-stable", "/usr/bin/google-chrome"];

/**
 * The browser the browser tests drive: CHROMIUM_PATH when set, else the system's Chromium when there is one, else the
 * one `npm install` brought (@sparticuz/chromium unpacks it to the temp folder on first use), so a machine with no
 * browser at all still runs them.
 */
async function chromiumPath(): Promise<string> {
  return process.env.CHROMIUM_PATH ?? SYSTEM.find((path) => existsSync(path)) ?? (await chromiumBinary.executablePath());
}

/**
 * A headless Chromium for the browser tests. Not @sparticuz/chromium's own `args`: they include
 * --disable-web-security, which would switch off the very CORS and origin checks these tests are about.
 */
export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: await chromiumPath(),
    args: [
      "--no-sandbox",
      "--no-zygote",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    headless: true,
  });
}
