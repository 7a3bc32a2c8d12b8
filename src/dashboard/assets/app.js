// The loopd dashboard's script: it follows GET /api/events (EventSource, resumed with
// Last-Event-ID) and swaps in the parts of the page an event says changed, as HTML the server
// rendered (and escaped). Text from agents is only ever set with textContent. No framework,
// nothing to build: this file (and events.js) is embedded in the binary as it is.
//
// The tabs of one browser share one stream: events.js, a SharedWorker, holds it and posts
// every event to every tab (a browser holds at most 6 HTTP/1.1 connections to a host, so a
// stream a tab left the seventh tab without one). An attempt view follows its transcript on a
// stream of its own, and so does every page where SharedWorker is missing.
(function () {
  "use strict";

  var body = document.body;
  var page = {
    loop: body.dataset.loop || null,
    test: body.dataset.test || null,
    attempt: body.dataset.attempt ? Number(body.dataset.attempt) : null,
    transcripts: body.dataset.transcripts === "true",
  };
  var KINDS = [
    "loop_state", "attempt_started", "attempt_finished", "test_passed",
    "test_failed", "test_blocked", "test_changed", "alert", "hint",
  ];
  // How long changes are gathered before the parts they touch are fetched again.
  var GATHER_MS = 250;
  var lastId = Number(body.dataset.after || 0);
  var source = null;
  var retryMs = 1000;

  // --- live connection ---------------------------------------------------------------------

  function setLive(state) {
    body.dataset.live = state;
    var text = document.querySelector(".live-text");
    if (text) {
      text.textContent = { connected: "live", connecting: "connecting…", lost: "connection lost" }[state];
    }
  }

  // Joins the shared stream, when the browser has SharedWorker and the page follows no
  // transcript; `false` when the page is to have a stream of its own instead.
  function connectShared() {
    if (page.transcripts || typeof SharedWorker === "undefined") return false;
    var worker;
    try {
      worker = new SharedWorker("/assets/events.js", { name: "loopd-events" });
    } catch (_) {
      return false;
    }
    var port = worker.port;
    body.dataset.stream = "shared";
    setLive("connecting");
    worker.onerror = function () {
      // The script did not load or run: this tab follows the journal by itself.
      port.close();
      body.dataset.stream = "own";
      connect();
    };
    port.onmessage = function (m) {
      var d = m.data || {};
      if (d.type === "live") setLive(d.state);
      else if (d.type === "event") onEvent(d.kind, { lastEventId: String(d.id), data: d.data });
    };
    port.start();
    port.postMessage({ type: "hello", after: lastId });
    window.addEventListener("pagehide", function () { port.postMessage({ type: "bye" }); });
    window.addEventListener("pageshow", function (ev) {
      // Back from the browser's page cache: the tab joins again.
      if (ev.persisted) port.postMessage({ type: "hello", after: lastId });
    });
    return true;
  }

  function connect() {
    body.dataset.stream = "own";
    var q = new URLSearchParams();
    if (lastId) q.set("after", String(lastId));
    if (page.loop) q.set("loop", page.loop);
    if (page.transcripts) {
      q.set("transcripts", "true");
      q.set("render", "true");
    }
    setLive("connecting");
    source = new EventSource("/api/events?" + q.toString());
    source.onopen = function () {
      setLive("connected");
      retryMs = 1000;
    };
    source.onerror = function () {
      // The browser retries by itself (with Last-Event-ID) unless the stream was refused.
      if (source.readyState === EventSource.CLOSED) lost();
      else setLive("connecting");
    };
    KINDS.forEach(function (kind) {
      source.addEventListener(kind, function (m) { onEvent(kind, m); });
    });
    source.addEventListener("transcript", onTranscript);
    source.addEventListener("shutdown", function () {
      source.close();
      lost();
    });
  }

  // The daemon went away (or refused): try again, less and less often, from the last id seen.
  function lost() {
    setLive("lost");
    if (source) source.close();
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  }

  function onEvent(kind, m) {
    var id = Number(m.lastEventId);
    if (id > lastId) lastId = id;
    var e;
    try { e = JSON.parse(m.data); } catch (_) { return; }
    // The shared stream is the fleet's: a loop's page keeps its own loop's events.
    if (page.loop && e.loop_name !== page.loop) return;
    if (kind === "alert") bumpAlerts();
    maybeNotify(kind, e);
    // A hint changes no fleet row.
    if (kind !== "hint" && document.getElementById("fleet")) queueRow(e.loop_name, kind, e);
    document.querySelectorAll("[data-region]").forEach(function (region) {
      var on = (region.dataset.on || "").split(",");
      if (on.indexOf(kind) < 0 && on.indexOf("*") < 0) return;
      schedule(region.dataset.region);
    });
  }

  // --- the fleet table: rows named by events are fetched again, together -------------------

  var rowsWanted = new Set();
  var rowsTimer = null;

  function rowOf(name) {
    var found = null;
    document.querySelectorAll("#fleet tr[data-loop]").forEach(function (tr) {
      if (tr.dataset.loop === name) found = tr;
    });
    return found;
  }

  // The table stays in the order it was rendered in; when what a loop needs changes (or a
  // loop is new) a link offers the new order.
  function offerResort(why) {
    var box = document.getElementById("resort");
    if (!box) return;
    box.hidden = false;
    box.querySelector(".why").textContent = why;
  }

  function queueRow(name, kind, e) {
    if (!name) return;
    if (!rowOf(name)) {
      if (kind === "loop_state" && e && e.message === "created") offerResort("new loop " + name + ".");
      return;
    }
    rowsWanted.add(name);
    if (!rowsTimer) rowsTimer = setTimeout(fetchRows, GATHER_MS);
  }

  function fetchRows() {
    var names = Array.from(rowsWanted);
    rowsWanted.clear();
    rowsTimer = null;
    fetch("/?rows=" + names.map(encodeURIComponent).join(","), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var t = document.createElement("template");
        t.innerHTML = "<table>" + html + "</table>";
        t.content.querySelectorAll("tr[data-loop]").forEach(function (tr) {
          var old = rowOf(tr.dataset.loop);
          if (!old) return;
          if (old.dataset.need !== tr.dataset.need) {
            offerResort(tr.dataset.loop + " is now " + tr.dataset.need.replace(/_/g, " ") + ".");
          }
          old.replaceWith(tr);
        });
        filterRows();
        tickAges();
      })
      .catch(function () {});
  }

  // --- regions: parts of a page fetched again when an event says they changed -------------

  var regions = {};

  function regionEl(root, name) {
    var found = null;
    root.querySelectorAll("[data-region]").forEach(function (el) {
      if (el.dataset.region === name) found = el;
    });
    return found;
  }

  function schedule(id) {
    if (!regionEl(document, id)) return;
    var r = regions[id] || (regions[id] = { timer: null, busy: false, again: false });
    if (r.busy) { r.again = true; return; }
    var el = regionEl(document, id);
    var wait = Number((el && el.dataset.gather) || GATHER_MS);
    if (!r.timer) r.timer = setTimeout(function () { refresh(id); }, wait);
  }

  function refresh(id) {
    var r = regions[id];
    r.timer = null;
    r.busy = true;
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", id);
    fetch(url.toString(), { credentials: "same-origin" })
      .then(function (resp) { return resp.ok ? resp.text() : Promise.reject(resp.status); })
      .then(function (html) {
        var t = document.createElement("template");
        t.innerHTML = html;
        var fresh = regionEl(t.content, id);
        var old = regionEl(document, id);
        if (fresh && old) old.replaceWith(fresh);
        tickAges();
      })
      .catch(function () {})
      .then(function () {
        r.busy = false;
        if (r.again) { r.again = false; schedule(id); }
      });
  }

  // --- the attempt view: rendered transcript lines, appended as they come ------------------

  var lastLine = 0;

  function onTranscript(m) {
    var d;
    try { d = JSON.parse(m.data); } catch (_) { return; }
    if (d.loop !== page.loop || d.test !== page.test || d.attempt !== page.attempt) return;
    var box = document.getElementById("transcript");
    if (!box) return;
    // After a reconnect the stream starts the transcript again: lines shown are skipped.
    if (typeof d.n === "number") {
      if (d.n <= lastLine) return;
      lastLine = d.n;
    }
    var atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    var empty = box.querySelector(".empty");
    if (empty) empty.remove();
    (d.rendered || [d.line]).forEach(function (text) {
      var div = document.createElement("div");
      div.className = "line";
      div.dataset.n = String(d.n);
      div.textContent = text;
      box.appendChild(div);
    });
    if (atEnd) box.scrollTop = box.scrollHeight;
  }

  function initTranscript() {
    document.querySelectorAll("#transcript .line[data-n]").forEach(function (l) {
      var n = Number(l.dataset.n);
      if (n > lastLine) lastLine = n;
    });
  }

  // --- actions -----------------------------------------------------------------------------

  // Changes that cannot be undone with one click ask for a second click.
  var ARMED = { stop: true, reset: true, skip: true, rollback: true };

  function api(method, path, payload) {
    return fetch(path, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Loopd-Request": "dashboard" },
      body: JSON.stringify(payload || {}),
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) throw new Error((j && j.error && j.error.message) || j.message || ("HTTP " + r.status));
        return j;
      });
    });
  }

  function toast(text, bad) {
    var box = document.getElementById("toast");
    if (!box) {
      box = document.createElement("div");
      box.id = "toast";
      box.setAttribute("role", "status");
      document.body.appendChild(box);
    }
    box.textContent = text;
    box.className = bad ? "bad" : "";
    clearTimeout(box.timer);
    box.timer = setTimeout(function () { box.textContent = ""; }, 5000);
  }

  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-action]");
    if (!b || b.disabled) return;
    var action = b.dataset.action;
    var loop = b.dataset.loop || page.loop;
    if (!loop) return;
    if (ARMED[action] && b.dataset.armed !== "true") {
      b.dataset.armed = "true";
      b.dataset.label = b.textContent;
      b.textContent = "confirm " + action + "?";
      setTimeout(function () {
        if (b.dataset.armed === "true") {
          b.dataset.armed = "false";
          b.textContent = b.dataset.label;
        }
      }, 4000);
      return;
    }
    b.dataset.armed = "false";
    if (b.dataset.label) b.textContent = b.dataset.label;
    var path = "/api/loops/" + encodeURIComponent(loop) +
      (b.dataset.test ? "/tests/" + encodeURIComponent(b.dataset.test) : "") + "/" + action;
    b.disabled = true;
    api("POST", path)
      .then(function () { toast(action + " " + loop + (b.dataset.test ? " " + b.dataset.test : "") + ": done"); })
      .catch(function (err) { toast(action + " failed: " + err.message, true); })
      .then(function () { b.disabled = false; queueRow(loop); });
  });

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.id !== "hint") return;
    ev.preventDefault();
    var text = form.elements.text.value.trim();
    if (!text) return;
    var payload = { text: text, author: "dashboard" };
    var test = form.elements.test ? form.elements.test.value : "";
    if (test) payload.test = test;
    api("POST", "/api/loops/" + encodeURIComponent(page.loop) + "/hints", payload)
      .then(function () {
        form.elements.text.value = "";
        toast("hint stored: the next prompts" + (test ? " of " + test : "") + " carry it");
        schedule("loop-hints");
      })
      .catch(function (err) { toast("hint failed: " + err.message, true); });
  });

  function initLogout() {
    var b = document.getElementById("logout");
    if (!b) return;
    b.addEventListener("click", function () {
      api("POST", "/logout").catch(function () {}).then(function () { window.location.href = "/"; });
    });
  }

  // --- filters: the select applies at once, the search box filters the page as one types ---

  function filterRows() {
    var input = document.getElementById("search");
    if (!input) return;
    var text = input.value.trim().toLowerCase();
    document.querySelectorAll("#fleet tr[data-loop]").forEach(function (tr) {
      var test = (tr.querySelector('[data-field="test"]') || {}).textContent || "";
      var hit = !text || tr.dataset.loop.toLowerCase().indexOf(text) >= 0 ||
        test.toLowerCase().indexOf(text) >= 0;
      tr.hidden = !hit;
    });
  }

  function initFilters() {
    var select = document.getElementById("filter-state");
    if (select) select.addEventListener("change", function () { select.form.submit(); });
    var input = document.getElementById("search");
    if (input) input.addEventListener("input", filterRows);
  }

  // --- ages ("12 s ago") count on in the browser, without asking the server ----------------

  function ago(secs) {
    secs = Math.max(0, Math.round(secs));
    if (secs < 60) return secs + " s ago";
    if (secs < 3600) return Math.floor(secs / 60) + " min ago";
    if (secs < 86400) return Math.floor(secs / 3600) + " h " + Math.floor((secs % 3600) / 60) + " min ago";
    return Math.floor(secs / 86400) + " d ago";
  }

  function tickAges() {
    var now = Date.now();
    document.querySelectorAll("time.age[datetime]").forEach(function (t) {
      var at = Date.parse(t.getAttribute("datetime"));
      if (!isNaN(at)) t.textContent = ago((now - at) / 1000);
    });
  }

  // --- alerts and notifications ------------------------------------------------------------

  function bumpAlerts() {
    var c = document.getElementById("alerts-count");
    if (c) c.textContent = String(Number(c.textContent || 0) + 1);
  }

  function notifying() {
    return "Notification" in window && Notification.permission === "granted" &&
      localStorage.getItem("loopd-notify") === "on";
  }

  function showNotifyButton() {
    var b = document.getElementById("notify");
    if (!b) return;
    if (!("Notification" in window)) {
      b.disabled = true;
      b.textContent = "No notifications here";
      return;
    }
    b.textContent = notifying() ? "Notifications on" : "Notify me";
    b.setAttribute("aria-pressed", notifying() ? "true" : "false");
  }

  function initNotify() {
    var b = document.getElementById("notify");
    if (!b) return;
    showNotifyButton();
    b.addEventListener("click", function () {
      if (!("Notification" in window)) return;
      if (notifying()) {
        localStorage.setItem("loopd-notify", "off");
        showNotifyButton();
        return;
      }
      Notification.requestPermission().then(function (p) {
        localStorage.setItem("loopd-notify", p === "granted" ? "on" : "off");
        showNotifyButton();
      });
    });
  }

  // A test needs a person, a loop crashed, or its provider is out of credits; only news (an
  // event replayed after a reconnect that is older than five minutes stays quiet).
  function maybeNotify(kind, e) {
    if (!notifying()) return;
    if (Date.now() - Date.parse(e.at) > 5 * 60 * 1000) return;
    var data = e.data || {};
    var title = null;
    if (kind === "alert" && /needs a person/.test(e.message)) title = "A test needs a person";
    else if (kind === "loop_state" && data.state === "crashed") title = "A loop crashed";
    else if (kind === "loop_state" && data.reason === "out_of_credits") title = "Out of credits";
    if (!title) return;
    try {
      new Notification(title + ": " + e.loop_name, { body: e.message, tag: "loopd-" + e.id });
    } catch (_) {}
  }

  initTranscript();
  initFilters();
  initNotify();
  initLogout();
  tickAges();
  setInterval(tickAges, 1000);
  if (body.dataset.quiet !== "true" && !connectShared()) connect();
})();
