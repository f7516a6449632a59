import { createRoute, z } from "@hono/zod-openapi";
import { streamSSE } from "hono/streaming";
import { text } from "../../core/schemas";
import { authenticateChat } from "../../guards/authenticate";
import { cors } from "../../guards/cors";
import { BODY_PROBLEMS, CHAT_SECURITY, jsonBody, KEY_PROBLEMS, problems, routes, withBody } from "../openapi";

/** Pause between streamed words, so the reply arrives as a stream and not as one chunk. */
const WORD_DELAY_MS = 15;

/**
 * The chat endpoints: handshake tokens (browser widgets) and API keys (servers) both work here. The built-in responder
 * echoes the message as Server-Sent Events; the gateway will put the customer's own chat service behind it.
 */
export const chatRoutes = routes();
// Every answer of these paths speaks CORS (preflights included), not only the documented POST.
chatRoutes.use(cors);
chatRoutes.openapi(
  createRoute({
    method: "post",
    path: "/messages",
    summary: "Send a message; the reply streams back as Server-Sent Events",
    description: "Takes a handshake token (browsers), any valid API key or a person's access token (servers).",
    security: CHAT_SECURITY,
    middleware: withBody(authenticateChat),
    request: { body: jsonBody(z.strictObject({ message: text(4000) }).openapi("ChatMessage")) },
    responses: {
      200: {
        description:
          'The reply as Server-Sent Events: any number of `event: delta` whose `data` is `{"text": string}` (the next words, to append), then one `event: done` whose `data` is `{"words": integer}`.',
        content: {
          "text/event-stream": {
            schema: z.string().openapi({
              example:
                'event: delta\ndata: {"text":"You"}\n\nevent: delta\ndata: {"text":" said: hi"}\n\nevent: done\ndata: {"words":3}\n\n',
            }),
          },
        },
      },
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
);
