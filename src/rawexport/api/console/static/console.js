// Copy buttons for the commands (shown only when the clipboard is reachable). Nothing else:
// reading works without JavaScript, and htmx does the partial updates.
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest ? event.target.closest("button.copy") : null;
  if (!button) return;
  navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = "Copy"; }, 1500);
  });
});
function showCopyButtons() {
  if (!navigator.clipboard) return;
  document.querySelectorAll("button.copy[hidden]").forEach(function (b) { b.hidden = false; });
}
document.addEventListener("DOMContentLoaded", showCopyButtons);
document.addEventListener("htmx:afterSettle", showCopyButtons);
