/** Whether `Authorization: Bearer <secret>` carries this secret, compared in constant time. */
export async function bearerMatches(authorization: string | undefined, secret: string): Promise<boolean> {
  const sent = /^Bearer +(\S+) *$/i.exec(authorization ?? "")?.[1] ?? "";
  return constantTimeEqual(sent, secret);
}

/** Compares digests, so neither the content nor the length of the secret leaks through timing. */
async function constantTimeEqual(a: string, b: string): Promise<boolean> {
  const enc = new TextEncoder();
  const [da, db] = await Promise.all([crypto.subtle.digest("SHA-256", enc.encode(a)), crypto.subtle.digest("SHA-256", enc.encode(b))]);
  return crypto.subtle.timingSafeEqual(da, db);
}
