import { existsSync } from "node:fs";
import chromiumBinary from "@sparticuz/chromium";

/** Where distributions put Chromium (or Chrome). */
const SYSTEM = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome-stable", "/usr/bin/google-chrome"];

/**
 * The browser the browser tests drive: CHROMIUM_PATH when set, else the system's Chromium when there is one, else the
 * one `npm install` brought (@sparticuz/chromium unpacks it to the temp folder on first use), so a machine with no
 * browser at all still runs them.
 */
export async function chromiumPath(): Promise<string> {
  return process.env.CHROMIUM_PATH ?? SYSTEM.find((path) => existsSync(path)) ?? (await chromiumBinary.executablePath());
}
