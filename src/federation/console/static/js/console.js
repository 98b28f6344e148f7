// The console's small amount of JavaScript: CSRF on htmx requests, errors shown in the
// page, charts drawn from their data-chart option, time limits counting down.
(function () {
  "use strict";
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const lang = document.documentElement.lang === "en" ? "en" : "zh";
  const say = (zh, en) => (lang === "en" ? en : zh);

  function flash(message) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.hidden = false;
  }

  document.addEventListener("htmx:configRequest", (e) => {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });
  document.addEventListener("htmx:responseError", (e) => {
    const xhr = e.detail.xhr;
    if (xhr.status === 401) { window.location.href = "/console/signin"; return; }
    let text = "";
    const doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    const detail = doc.querySelector(".error-page .detail, .error-page h1");
    text = detail ? detail.textContent.trim() : "";
    flash(text || say("操作没有完成，请稍后再试。", "That did not work; try again in a moment."));
  });
  document.addEventListener("htmx:sendError", () => {
    flash(say("连接不上平台，请检查网络。", "The platform cannot be reached; check the network."));
  });

  // charts: <div class="chart" data-chart='{ECharts option}'>
  const charts = new Map();
  function drawCharts(root) {
    if (!window.echarts) return;
    root.querySelectorAll("[data-chart]").forEach((el) => {
      let chart = charts.get(el) || echarts.getInstanceByDom(el);
      if (!chart) { chart = echarts.init(el, null, { renderer: "canvas" }); charts.set(el, chart); }
      chart.setOption(JSON.parse(el.dataset.chart), true);
      el.dataset.drawn = "true";
    });
  }
  window.addEventListener("resize", () => charts.forEach((c) => c.resize()));

  // time limits: <span class="countdown" data-deadline="ISO instant">
  function tick() {
    const now = Date.now();
    document.querySelectorAll(".countdown[data-deadline]").forEach((el) => {
      const left = Math.round((Date.parse(el.dataset.deadline) - now) / 1000);
      const abs = Math.abs(left);
      const h = Math.floor(abs / 3600), m = Math.floor((abs % 3600) / 60), s = abs % 60;
      const text = (h ? h + ":" : "") + String(m).padStart(2, "0") + ":" + String(s).padStart(2, "0");
      el.textContent = left >= 0 ? say("剩余 ", "") + text + say("", " left") : say("已超时 ", "overdue by ") + text;
      el.classList.toggle("overdue", left < 0);
    });
  }

  document.addEventListener("DOMContentLoaded", () => { drawCharts(document); tick(); setInterval(tick, 1000); });
  document.addEventListener("htmx:afterSettle", (e) => { drawCharts(e.target); tick(); });
  window.federationConsole = { flash, drawCharts, say };
})();
