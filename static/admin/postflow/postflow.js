// Review detail page: decisions on a post someone else claimed need "take over" ticked, and a
// rejection needs a reason. The server checks both anyway; this only saves a round trip.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("pf-decide-form");
  if (!form) return;
  const takeOver = document.getElementById("pf-take-over");
  const reason = document.getElementById("pf-reason");
  const sync = () => {
    form.querySelectorAll("button[data-needs-takeover='1']").forEach((b) => {
      b.disabled = takeOver ? !takeOver.checked : false;
    });
  };
  if (takeOver) {
    takeOver.addEventListener("change", sync);
    sync();
  }
  form.addEventListener("submit", (event) => {
    const button = event.submitter;
    if (button && button.dataset.needsReason && reason && !reason.value.trim()) {
      event.preventDefault();
      reason.focus();
      reason.setCustomValidity("Give the creator a reason.");
      reason.reportValidity();
      reason.addEventListener("input", () => reason.setCustomValidity(""), { once: true });
    }
  });
});

// Flagged or sensitive media is blurred until clicked (DESIGN.md §11): the first click only reveals,
// except a click on a transcript cue's time, which asks to play from there: it reveals and seeks.
document.addEventListener(
  "click",
  (event) => {
    const box = event.target.closest && event.target.closest(".pf-blur");
    if (!box) return;
    box.classList.remove("pf-blur");
    if (event.target.closest(".pf-seek")) return;
    event.preventDefault();
    event.stopPropagation();
  },
  true,
);

// Keyboard shortcuts of the review queue; the list of keys is shown on the page (moderation/admin.py
// SHORTCUTS). Keys are ignored while typing in a field, except Esc and Ctrl+Enter.
document.addEventListener("DOMContentLoaded", () => {
  const detail = document.querySelector("[data-pf-page='detail']");
  const list = document.querySelector("[data-pf-page='list']");
  if (!detail && !list) return;
  const typing = (el) => el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));
  const go = (url) => { if (url) window.location.assign(url); };
  let pending = null;

  const decide = (op) => {
    const form = document.getElementById("pf-decide-form");
    const button = form && form.querySelector(`button[name='op'][value='${op}']`);
    if (!button || button.disabled) return false;
    const reason = document.getElementById("pf-reason");
    if (button.dataset.needsReason && reason && !reason.value.trim()) {
      pending = op;
      reason.focus();
      return true;
    }
    form.requestSubmit(button);
    return true;
  };

  const rows = list ? Array.from(list.querySelectorAll("#result_list tbody tr")) : [];
  let current = -1;
  const highlight = (i) => {
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, n) => r.classList.toggle("pf-current", n === current));
    rows[current].scrollIntoView({ block: "nearest" });
  };
  const openCurrent = () => {
    const row = rows[current];
    const link = row && row.querySelector("[data-pf-url]");
    if (link) go(link.dataset.pfUrl);
  };

  document.addEventListener("keydown", (event) => {
    const el = document.activeElement;
    if (typing(el)) {
      if (event.key === "Escape") el.blur();
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && el.id === "pf-reason") {
        event.preventDefault();
        decide(pending || "reject");
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (detail) {
      const ops = { a: "approve", r: "reject", q: "quarantine", s: "sensitive", d: "dismiss" };
      if (ops[key]) {
        if (decide(ops[key])) event.preventDefault();
      } else if (key === "j") go(detail.dataset.pfNext);
      else if (key === "k") go(detail.dataset.pfPrev);
      else if (key === "u") go(detail.dataset.pfList);
    } else if (list) {
      if (key === "j") highlight(current + 1);
      else if (key === "k") highlight(current - 1);
      else if ((key === "o" || key === "Enter") && current >= 0) {
        event.preventDefault();
        openCurrent();
      }
    }
  });
});
