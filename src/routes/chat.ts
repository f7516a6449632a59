import { createRoute, z } from "@hono/zod-openapi";
import { streamSSE } from "hono/streaming";
import { cors } from "../auth/cors";
import { authenticateChat } from "../auth/middleware";
import { BODY_PROBLEMS, jsonBody, KEY_PROBLEMS, KEY_SECURITY, problems, routes, withBody } from "../openapi";
import { text } from "../schemas";
import { allow } from "./method-not-allowed";

/** Pause between streamed words, so the reply arrives as a stream and not as one chunk. */
const WORD_DELAY_MS = 15;

/**
 * The chat endpoints: handshake tokens (browser widgets) and API keys (servers) both work here. The built-in responder
 * echoes the message as Server-Sent Events; the gateway will put the customer's own chat service behind it.
 */
export const chatRoutes = routes();
// Every answer of these paths speaks CORS (preflights included), not only the documented POST.
chatRoutes.use(cors);
chatRoutes
  .openapi(
    createRoute({
      method: "post",
      path: "/messages",
      summary: "Send a message; the reply streams back as Server-Sent Events",
      description: "`event: delta` with `{text}`, then `event: done`. Takes a handshake token (browsers) or any valid API key (servers).",
      security: KEY_SECURITY,
      middleware: withBody(authenticateChat),
      request: { body: jsonBody(z.strictObject({ message: text(4000) }).openapi("ChatMessage")) },
      responses: {
        200: { description: "The reply as Server-Sent Events", content: { "text/event-stream": { schema: z.string() } } },
        ...problems(...KEY_PROBLEMS, ...BODY_PROBLEMS, "invalid_token", "token_expired", "agent_disabled"),
      },
    }),
    async (c) => {
      const { message } = c.req.valid("json");
      const words = `You said: ${message}`.split(" ");
      return streamSSE(c, async (stream) => {
        for (const [i, word] of words.entries()) {
          await stream.writeSSE({ event: "delta", data: JSON.stringify({ text: i === 0 ? word : ` ${word}` }) });
          await stream.sleep(WORD_DELAY_MS);
        }
        await stream.writeSSE({ event: "done", data: JSON.stringify({ words: words.length }) });
      });
    },
  )
  .all("/messages", allow("POST"));
