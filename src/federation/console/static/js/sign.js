// Signing a consult report in the specialist's browser, never on the gateway.
//
// The gateway drafts the report (POST /api/consults/{id}/report-draft) and returns
// `to_sign`: base64 of the exact bytes the signature covers (the report's canonical
// JSON). signReport() signs them with the private key of the specialist's person
// certificate (issued by `federation ca issue --person`: ECDSA P-256, PKCS#8 PEM) using
// WebCrypto, and returns the signature as the gateway checks it: base64 of a DER
// ECDSA-Sig-Value (RFC 3279 §2.2.3), sigFormat application/vnd.federation.ecdsa-sha256+der.
// The page then posts {report, signature, certificate} to POST /api/consults/{id}/report
// (or /amend). The key never leaves the page.
//
// Accepted keys: "PRIVATE KEY" (PKCS#8) holding an EC P-256/P-384/P-521 or RSA key, and
// "EC PRIVATE KEY" (SEC1, RFC 5915, as `openssl ec` writes it), wrapped into PKCS#8 here
// because WebCrypto imports only PKCS#8. RSA keys sign RSASSA-PKCS1-v1_5 with SHA-256,
// which the gateway also verifies. An encrypted key must be decrypted first.

const OID_EC = "1.2.840.10045.2.1";
const OID_RSA = "1.2.840.113549.1.1.1";
const CURVES = {
  "1.2.840.10045.3.1.7": { name: "P-256", bytes: 32 },
  "1.3.132.0.34": { name: "P-384", bytes: 48 },
  "1.3.132.0.35": { name: "P-521", bytes: 66 },
};

/** Sign `toSignB64` (base64) with the PEM private key text; resolve to base64 (DER). */
export async function signReport(keyPemText, toSignB64) {
  const payload = fromBase64(toSignB64, "the text to sign");
  const { der, label } = readPem(keyPemText);
  const pkcs8 = label === "EC PRIVATE KEY" ? sec1ToPkcs8(der) : der;
  const kind = keyKind(pkcs8);
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle) {
    throw new Error("this browser offers no WebCrypto (crypto.subtle): open the console " +
                    "over https or on localhost");
  }
  if (kind.type === "rsa") {
    const key = await subtle.importKey("pkcs8", pkcs8,
      { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["sign"]);
    return toBase64(new Uint8Array(await subtle.sign("RSASSA-PKCS1-v1_5", key, payload)));
  }
  const key = await subtle.importKey("pkcs8", pkcs8,
    { name: "ECDSA", namedCurve: kind.curve.name }, false, ["sign"]);
  const raw = new Uint8Array(await subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key,
                                               payload));
  return toBase64(p1363ToDer(raw, kind.curve.bytes));
}

// ------------------------------------------------------------------------ PEM and base64

export function readPem(text) {
  const m = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/.exec(String(text || ""));
  if (!m) {
    throw new Error("this is not a PEM private key: choose the .key file that came with " +
                    "your person certificate");
  }
  const label = m[1];
  if (label === "ENCRYPTED PRIVATE KEY" || /Proc-Type:\s*4,ENCRYPTED/.test(m[2])) {
    throw new Error("the key file is encrypted: decrypt it first (openssl pkcs8 -topk8 " +
                    "-nocrypt)");
  }
  if (label !== "PRIVATE KEY" && label !== "EC PRIVATE KEY") {
    throw new Error(`a ${label} cannot sign reports: choose the private key (.key) of ` +
                    "your person certificate");
  }
  return { label, der: fromBase64(m[2].replace(/\s+/g, ""), "the key file") };
}

function fromBase64(text, what) {
  let bin;
  try {
    bin = atob(String(text).replace(/\s+/g, ""));
  } catch {
    throw new Error(`${what} is not base64`);
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function toBase64(bytes) {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

// ------------------------------------------------------------------------ a little DER

function readTlv(bytes, at) {
  if (at + 2 > bytes.length) throw new Error("the key is truncated (DER)");
  const tag = bytes[at];
  let len = bytes[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n < 1 || n > 3) throw new Error("the key has a DER length this reader refuses");
    len = 0;
    for (let i = 0; i < n; i++) len = (len << 8) | bytes[start + i];
    start += n;
  }
  if (start + len > bytes.length) throw new Error("the key is truncated (DER)");
  return { tag, start, end: start + len };
}

function children(bytes, tlv) {
  const out = [];
  for (let at = tlv.start; at < tlv.end;) {
    const c = readTlv(bytes, at);
    out.push(c);
    at = c.end;
  }
  return out;
}

function oid(bytes, tlv) {
  const b = bytes.subarray(tlv.start, tlv.end);
  const parts = [Math.floor(b[0] / 40), b[0] % 40];
  let v = 0;
  for (let i = 1; i < b.length; i++) {
    v = v * 128 + (b[i] & 0x7f);
    if (!(b[i] & 0x80)) { parts.push(v); v = 0; }
  }
  return parts.join(".");
}

function derLength(n) {
  if (n < 0x80) return [n];
  const out = [];
  for (let v = n; v > 0; v >>= 8) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

function der(tag, content) {
  return Uint8Array.from([tag, ...derLength(content.length), ...content]);
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/** The algorithm a PKCS#8 PrivateKeyInfo (RFC 5208) holds: {type: "ec", curve} or rsa. */
export function keyKind(pkcs8) {
  const top = readTlv(pkcs8, 0);
  const [, algorithm] = children(pkcs8, top);
  if (!algorithm || algorithm.tag !== 0x30) throw new Error("the key is not PKCS#8");
  const [algOid, params] = children(pkcs8, algorithm);
  const alg = oid(pkcs8, algOid);
  if (alg === OID_RSA) return { type: "rsa" };
  if (alg !== OID_EC) throw new Error(`the key's algorithm (${alg}) cannot sign reports`);
  const curve = params && params.tag === 0x06 ? CURVES[oid(pkcs8, params)] : undefined;
  if (!curve) throw new Error("the key's curve is not P-256, P-384 or P-521");
  return { type: "ec", curve };
}

/** A SEC1 ECPrivateKey (RFC 5915) wrapped as PKCS#8 (RFC 5208), its curve taken from its
 *  [0] parameters. */
export function sec1ToPkcs8(sec1) {
  const top = readTlv(sec1, 0);
  const params = children(sec1, top).find((c) => c.tag === 0xa0);
  if (!params) throw new Error("the EC key names no curve: export it as PKCS#8 instead");
  const curveOid = sec1.subarray(params.start, params.end);          // the OID's whole TLV
  const algorithm = der(0x30, concat(der(0x06, Uint8Array.from([
    0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01])), curveOid));          // id-ecPublicKey
  return der(0x30, concat(Uint8Array.from([0x02, 0x01, 0x00]), algorithm, der(0x04, sec1)));
}

/** WebCrypto's ECDSA signature (r || s, IEEE P1363) as a DER ECDSA-Sig-Value. */
export function p1363ToDer(raw, size) {
  if (raw.length !== 2 * size) {
    throw new Error(`an ECDSA signature of ${raw.length} bytes, expected ${2 * size}`);
  }
  const integer = (bytes) => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const v = bytes.subarray(i);
    return der(0x02, v[0] & 0x80 ? concat(Uint8Array.from([0]), v) : v);
  };
  return der(0x30, concat(integer(raw.subarray(0, size)), integer(raw.subarray(size))));
}
