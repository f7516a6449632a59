import type { IncomingMessage, ServerResponse } from "node:http";

/** "ok", or why the delivery does not verify. */
export function verifyDelivery(
  delivery: { id?: string; timestamp?: string; signature?: string; body: string },
  secrets: readonly string[],
  publicKey?: JsonWebKey | null,
  now?: number,
): string;

export function receive(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean>;
