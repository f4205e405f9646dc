// The few lines of script the screens need: Select All and the Actions count on
// Manage, and live progress on Sending. Everything works as plain forms without it,
// except the live numbers (a reload shows them).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const owners = document.getElementById("owners");
  if (owners) {
    const picks = () => Array.from(owners.querySelectorAll("input.pick"));
    const all = document.getElementById("select-all");
    const update = () => {
      const n = picks().filter((p) => p.checked).length;
      owners.querySelectorAll(".selected-count").forEach((el) => { el.textContent = String(n); });
      document.getElementById("send-invite").disabled = n === 0;
      if (all) {
        const total = picks().length;
        all.checked = total > 0 && n === total;
        all.indeterminate = n > 0 && n < total;
      }
    };
    if (all) {
      all.addEventListener("change", () => {
        picks().forEach((p) => { p.checked = all.checked; });
        update();
      });
    }
    owners.addEventListener("change", (e) => {
      if (e.target.classList && e.target.classList.contains("pick")) update();
    });
    update();
  }

  const progress = document.getElementById("progress");
  const state = document.getElementById("state");
  if (progress && state && state.dataset.running === "true") {
    const show = (id, v) => { document.getElementById(id).textContent = String(v); };
    const poll = async () => {
      try {
        const r = await fetch(progress.dataset.url, { credentials: "same-origin" });
        if (r.ok) {
          const s = await r.json();
          show("sent", s.sent); show("failed", s.failed); show("skipped", s.skipped);
          show("pending", s.pending); show("rate", s.per_second || "—");
          const bar = document.getElementById("bar");
          bar.max = s.total; bar.value = s.sent + s.failed + s.skipped;
          if (!s.running) {
            // The run ended: the page again, with the failed list and buttons.
            window.location.reload();
            return;
          }
        }
      } catch (_) { /* the server is restarting: try again */ }
      setTimeout(poll, 400);
    };
    setTimeout(poll, 400);
  }
});
