// The specialist's case page: DICOM slices chosen from the strip, and "sign and send":
// the page asks the console for the report draft, signs `to_sign` here with the key
// file the specialist chose (sign.js; the key never leaves the browser) and posts the
// report, the signature and the certificate back through the console to the API.
import { signReport } from "./sign.js";

const lang = document.documentElement.lang === "en" ? "en" : "zh";
const say = (zh, en) => (lang === "en" ? en : zh);
const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

document.querySelectorAll(".viewer").forEach((viewer) => {
  const main = viewer.querySelector(".dicom-main");
  viewer.querySelectorAll("[data-src]").forEach((button) => {
    button.addEventListener("click", () => { main.src = button.dataset.src; });
  });
});

const form = document.getElementById("report-form");
if (form) {
  const status = document.getElementById("sign-status");
  const fieldError = (name, text) => {
    const box = form.querySelector(`.field-error[data-field="${name}"]`);
    if (box) { box.textContent = text || ""; box.hidden = !text; }
    const input = form.querySelector(`[name="${name}"]`);
    if (input) input.setAttribute("aria-invalid", text ? "true" : "false");
  };
  const post = async (url, body) => {
    const answer = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await answer.json(); } catch { data = {}; }
    if (!answer.ok) {
      const error = new Error(data.error || say("平台拒绝了这个请求。", "The platform refused this."));
      error.fields = data.fields || {};
      throw error;
    }
    return data;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    ["conclusion", "key", "certificate"].forEach((f) => fieldError(f, ""));
    status.textContent = "";
    status.className = "muted";
    const consult = form.dataset.consult;
    const amend = form.dataset.amend === "true";
    const conclusion = form.conclusion.value.trim();
    const codes = [...form.querySelectorAll(".code-row")].map((row) => ({
      system: row.querySelector('[name="system"]').value,
      code: row.querySelector('[name="code"]').value.trim(),
      display: row.querySelector('[name="display"]').value.trim(),
    })).filter((c) => c.code);
    let missing = false;
    if (!conclusion) { fieldError("conclusion", say("请填写结论。", "Write the conclusion.")); missing = true; }
    const keyFile = form.key.files[0];
    if (!keyFile) { fieldError("key", say("请选择您的私钥文件。", "Choose your key file.")); missing = true; }
    const certFile = form.certificate.files[0];
    const pasted = form.certificate_text.value.trim();
    if (!certFile && !pasted) {
      fieldError("certificate", say("请选择或粘贴您的证书。", "Choose or paste your certificate."));
      missing = true;
    }
    if (missing) return;
    const button = document.getElementById("sign-send");
    button.disabled = true;
    try {
      status.textContent = say("正在生成报告…", "Drafting the report…");
      const draft = await post(`/console/consults/${consult}/report-draft`, { conclusion, codes, amend });
      status.textContent = say("正在本机签名…", "Signing here…");
      let signature;
      try {
        signature = await signReport(await keyFile.text(), draft.to_sign);
      } catch (err) {
        fieldError("key", err.message);
        throw err;
      }
      const certificate = certFile ? await certFile.text() : pasted;
      status.textContent = say("正在发送…", "Sending…");
      const done = await post(`/console/consults/${consult}/report`,
        { report: draft.report, signature, certificate, amend });
      form.dataset.sent = "true";
      window.location.href = done.redirect;
    } catch (err) {
      Object.entries(err.fields || {}).forEach(([f, text]) => fieldError(f, text));
      status.textContent = err.message;
      status.className = "error";
      form.dataset.failed = "true";
    } finally {
      button.disabled = false;
    }
  });
}
