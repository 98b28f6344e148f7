// Runs the console's sign.js in Node's WebCrypto for tests/consult/test_consult_sign_js.py:
// stdin {key_pem, to_sign: [base64…]} → stdout [{signature} | {error}], one per item.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const { signReport } = await import(pathToFileURL(process.argv[2]).href);
const job = JSON.parse(readFileSync(0, "utf8"));
const out = [];
for (const item of job.to_sign) {
  try {
    out.push({ signature: await signReport(job.key_pem, item) });
  } catch (e) {
    out.push({ error: e.message });
  }
}
process.stdout.write(JSON.stringify(out));
