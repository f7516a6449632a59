import type { D1Migration } from "cloudflare:test";
import type { Bindings } from "../src/platform/env";

declare global {
  namespace Cloudflare {
    interface Env extends Bindings {
      TEST_MIGRATIONS: D1Migration[];
      TEST_UPSTREAM_URL: string;
      /** A second Worker whose fetch calls Keygate's verify entrypoint through its service binding. */
      CALLER: Fetcher;
    }
  }
}
