import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { cors } from "../auth/cors";
import { authenticateChat } from "../auth/middleware";
import { Fields, readJson } from "../body";
import type { AppEnv } from "../env";
import { allow } from "./method-not-allowed";

/** Pause between streamed words, so the reply arrives as a stream and not as one chunk. */
const WORD_DELAY_MS = 15;

/**
 * The chat endpoints: handshake tokens (browser widgets) and API keys (servers) both work here. The built-in responder
 * echoes the message as Server-Sent Events; the gateway will put the customer's own chat service behind it.
 */
export const chatRoutes = new Hono<AppEnv>()
  .use(cors)
  .use(authenticateChat)
  .post("/messages", async (c) => {
    const f = new Fields(await readJson(c));
    const message = f.string("message", { required: true, max: 4000 });
    f.done();
    const words = `You said: ${message}`.split(" ");
    return streamSSE(c, async (stream) => {
      for (const [i, word] of words.entries()) {
        await stream.writeSSE({ event: "delta", data: JSON.stringify({ text: i === 0 ? word : ` ${word}` }) });
        await stream.sleep(WORD_DELAY_MS);
      }
      await stream.writeSSE({ event: "done", data: JSON.stringify({ words: words.length }) });
    });
  })
  .all("/messages", allow("POST"));
