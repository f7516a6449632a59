import { fromBase64 } from "../core/ids";
import { type Config, misconfigured } from "../platform/config";
import { ApiError } from "../platform/errors";

// GitHub's secret scanning partner program signs each alert it POSTs: `Github-Public-Key-Signature` is the base64
// of an ECDSA P-256 / SHA-256 signature (ASN.1 DER) of the raw body, under the public key `Github-Public-Key-Identifier`
// names among those GitHub publishes (SECRET_SCANNING_KEYS holds them). WebCrypto verifies it once the DER signature
// is turned into the raw r‖s form WebCrypto takes.

const imported = new Map<string, Promise<CryptoKey>>();

function importKey(pem: string): Promise<CryptoKey> {
  let key = imported.get(pem);
  if (!key) {
    key = (async () => {
      try {
        const der = fromBase64(pem.replace(/-----[A-Z ]+-----|\s/g, ""));
        return await crypto.subtle.importKey("spki", der, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
      } catch {
        // Not cached: a corrected variable is read again. What is there is the operator's to fix, not a 500.
        imported.delete(pem);
        misconfigured("SECRET_SCANNING_KEYS", "holds a key that is not a P-256 public key");
      }
    })();
    imported.set(pem, key);
  }
  return key;
}

/** A DER `SEQUENCE { INTEGER r, INTEGER s }` as the 64 bytes r‖s, or null when it is not one. */
export function derToRaw(der: Uint8Array): Uint8Array | null {
  let i = 0;
  if (der[i++] !== 0x30) return null;
  const total = der[i++] as number;
  if (total & 0x80 || total !== der.length - 2) return null;
  const raw = new Uint8Array(64);
  for (const offset of [0, 32]) {
    if (der[i++] !== 0x02) return null;
    const length = der[i++] as number;
    if (length > 33 || i + length > der.length) return null;
    let int = der.subarray(i, i + length);
    i += length;
    while (int.length > 32 && int[0] === 0) int = int.subarray(1);
    if (int.length > 32) return null;
    raw.set(int, offset + 32 - int.length);
  }
  return i === der.length ? raw : null;
}

/** Throws 401 `invalid_signature` unless `body` is signed by the GitHub key the headers name. */
export async function verifyGithubSignature(
  keys: Config["secretScanningKeys"],
  keyId: string | undefined,
  signature: string | undefined,
  body: string,
): Promise<void> {
  const refused = () => new ApiError("invalid_signature", "The alert is not signed by one of GitHub's secret scanning keys.");
  const known = keys.find((k) => k.key_identifier === keyId);
  if (!known || !signature) throw refused();
  let raw: Uint8Array | null;
  try {
    raw = derToRaw(fromBase64(signature));
  } catch {
    raw = null;
  }
  if (!raw) throw refused();
  const valid = await crypto.subtle.verify(
    { name: "ECDSA", hash: "SHA-256" },
    await importKey(known.key),
    raw,
    new TextEncoder().encode(body),
  );
  if (!valid) throw refused();
}
