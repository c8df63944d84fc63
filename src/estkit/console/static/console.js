// estkit console: live refresh and confirmations. No framework, no external code.
// The server renders every fragment (escaped); this script only swaps it in when it changed.
(function () {
  "use strict";
  var body = document.body;
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  var badge = document.getElementById("pending-badge");
  var interval = parseInt(body.getAttribute("data-poll-ms") || "3000", 10);
  var digest = body.getAttribute("data-digest");
  var busy = false;

  function changed(field) {
    if (field.tagName !== "SELECT") { return field.value !== field.defaultValue; }
    var hasDefault = false;
    for (var j = 0; j < field.options.length; j++) {
      if (field.options[j].defaultSelected) { hasDefault = true; }
    }
    var chosen = field.options[field.selectedIndex];
    return hasDefault ? !(chosen && chosen.defaultSelected) : field.selectedIndex > 0;
  }

  // Never pull the table out from under an operator who is typing a reason or picking one.
  function editing() {
    var active = document.activeElement;
    if (active && live.contains(active) && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(active.tagName)) {
      return true;
    }
    var fields = live.querySelectorAll("input[type=text], select");
    for (var i = 0; i < fields.length; i++) {
      if (changed(fields[i])) { return true; }
    }
    return false;
  }

  function setStatus(text, cls) {
    if (!status) { return; }
    status.textContent = text;
    status.className = "live " + cls;
  }

  function poll() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(location.pathname + location.search, {
      headers: { "Accept": "application/json", "X-Console-Live": "1", "X-Console-Digest": digest },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (response.status === 401 || response.status === 403) {
        setStatus("signed out: reload the page", "off");
        return null;
      }
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    }).then(function (data) {
      if (!data) { return; }
      if (typeof data.html === "string" && data.digest !== digest && !editing()) {
        live.innerHTML = data.html;
        digest = data.digest;
      }
      if (badge && typeof data.pending === "number") {
        badge.textContent = String(data.pending);
        badge.className = data.pending ? "badge" : "badge zero";
      }
      setStatus("live · " + new Date().toLocaleTimeString(), "on");
    }).catch(function () {
      setStatus("offline: retrying", "off");
    }).then(function () { busy = false; });
  }

  // Delegated, so forms swapped in by the live refresh are covered too.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  if (live) {
    setStatus("live", "on");
    window.setInterval(poll, interval);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { poll(); } });
  }
})();
