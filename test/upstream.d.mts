/** Starts the gateway tests' upstream on 127.0.0.1; resolves with its origin. */
export function startUpstream(): Promise<string>;
