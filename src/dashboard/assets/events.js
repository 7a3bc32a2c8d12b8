// The dashboard's shared event stream: a SharedWorker that holds ONE EventSource on
// /api/events for every tab of the origin and posts each event to each of them. A browser
// holds at most 6 HTTP/1.1 connections to a host, and a stream keeps one for as long as its
// page is open; with one stream a tab, a seventh tab never loaded.
//
// The stream is the whole fleet's (no `loop` filter, no transcripts): a tab keeps the events
// of its own loop itself. An attempt view follows its transcript on a stream of its own (see
// app.js), so it is not here. Embedded in the binary as it is, like app.js.
//
// Messages. From a tab: {type: "hello", after: ID} (the journal id its page was rendered at)
// and {type: "bye"} when it goes. To a tab: {type: "live", state} (connecting, connected,
// lost) and {type: "event", kind, id, data} (data: the event's JSON text, as sent).
"use strict";

var KINDS = [
  "loop_state", "attempt_started", "attempt_finished", "test_passed",
  "test_failed", "test_blocked", "test_changed", "alert", "hint",
];
// Events kept for a tab that connects late: its page was rendered at an id the stream has
// passed, and what came between is replayed to it from here.
var KEEP = 1000;

var ports = [];
var recent = [];
var state = "connecting";
var source = null;
var lastId = 0;
var retryMs = 1000;
var retryTimer = null;

function post(port, msg) {
  try { port.postMessage(msg); } catch (_) { drop(port); }
}

function broadcast(msg) {
  ports.slice().forEach(function (p) { post(p, msg); });
}

function drop(port) {
  var i = ports.indexOf(port);
  if (i >= 0) ports.splice(i, 1);
  // The last tab went: nobody needs the stream (the worker itself ends soon after).
  if (!ports.length && source) {
    source.close();
    source = null;
    state = "connecting";
  }
}

function setLive(s) {
  state = s;
  broadcast({ type: "live", state: s });
}

function connect() {
  retryTimer = null;
  var q = new URLSearchParams();
  if (lastId) q.set("after", String(lastId));
  setLive("connecting");
  source = new EventSource("/api/events?" + q.toString());
  source.onopen = function () {
    setLive("connected");
    retryMs = 1000;
  };
  source.onerror = function () {
    // The browser retries by itself (with Last-Event-ID) unless the stream was refused.
    if (source && source.readyState === EventSource.CLOSED) lost();
    else setLive("connecting");
  };
  KINDS.forEach(function (kind) {
    source.addEventListener(kind, function (m) { onEvent(kind, m); });
  });
  source.addEventListener("shutdown", lost);
}

// The daemon went away (or refused): try again, less and less often, from the last id seen.
function lost() {
  if (source) source.close();
  source = null;
  setLive("lost");
  if (!retryTimer) retryTimer = setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, 30000);
}

function onEvent(kind, m) {
  var id = Number(m.lastEventId);
  if (id > lastId) lastId = id;
  var msg = { type: "event", kind: kind, id: id, data: m.data };
  recent.push(msg);
  if (recent.length > KEEP) recent.shift();
  broadcast(msg);
}

function hello(port, after) {
  if (ports.indexOf(port) < 0) ports.push(port);
  post(port, { type: "live", state: state });
  recent.forEach(function (msg) {
    if (msg.id > after) post(port, msg);
  });
  if (!source && !retryTimer) {
    // The first tab: the stream starts where its page was rendered.
    if (!lastId) lastId = after;
    connect();
  } else if (state === "lost") {
    // A tab that opens now (maybe just signed in) need not wait for the next try.
    clearTimeout(retryTimer);
    retryMs = 1000;
    connect();
  }
}

self.onconnect = function (ev) {
  var port = ev.ports[0];
  port.onmessage = function (m) {
    var d = m.data || {};
    if (d.type === "hello") hello(port, Number(d.after) || 0);
    else if (d.type === "bye") drop(port);
  };
  port.start();
};
