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
