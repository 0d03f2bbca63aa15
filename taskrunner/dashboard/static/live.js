// The overview's live part: fetched again every few seconds and swapped in.
// The server renders (and escapes) the HTML; this script only replaces it.
"use strict";
(function () {
  const live = document.getElementById("live");
  const status = document.getElementById("live-status");
  if (!live) return;
  const every = Math.max(1000, parseInt(live.dataset.every, 10) || 5000);
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const reply = await fetch(live.dataset.src, {credentials: "same-origin", cache: "no-store"});
      if (!reply.ok) throw new Error("HTTP " + reply.status);
      live.innerHTML = await reply.text();
      status.textContent = "live";
      status.classList.remove("stale");
    } catch (err) {
      status.textContent = "not updating (" + err.message + ")";
      status.classList.add("stale");
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, every);
})();
