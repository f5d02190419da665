// miyabi's dashboard: the server renders every page with its state; this script keeps
// it live. It follows the live feeds (Server-Sent Events), fetches the parts of the page
// that may have changed from the page itself (PAGE?part=ID: the HTML of the element
// id=ID, rendered and escaped by the server), and sends every change to /api/v1 with
// the token in a header. Text from agents, tasks and issues reaches the page only as
// the server escaped it, or here as textContent.
"use strict";

const body = document.body;
const TOKEN = document.querySelector('meta[name="miyabi-token"]').content;
const CAN_ACT = body.dataset.canAct === "1";
const conn = document.getElementById("conn");

async function api(method, path, data) {
  const init = { method, headers: {} };
  if (method !== "GET") init.headers["X-Miyabi-Token"] = TOKEN;
  if (data !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(data);
  }
  const r = await fetch("/api/v1" + path, init);
  const text = await r.text();
  let out = null;
  try { out = text ? JSON.parse(text) : null; } catch (e) { out = text; }
  if (!r.ok) throw new Error((out && out.error) || (r.status + " " + r.statusText));
  return out;
}

let toastTimer = null;
function say(text, bad) {
  let t = document.getElementById("toast");
  if (!t) { t = document.createElement("div"); t.id = "toast"; body.append(t); }
  t.textContent = text;
  t.className = bad ? "bad" : "good";
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = "gone"; }, 5000);
}

async function act(button, path, data, done) {
  button.disabled = true;
  try {
    const out = await api("POST", path, data);
    say(done(out));
    return out;
  } catch (e) {
    say(e.message, true);
    return null;
  } finally {
    button.disabled = false;
  }
}

function live(path, event, onData) {
  // An EventSource reconnects by itself; the dot in the header says whether it is up.
  const src = new EventSource("/api/v1" + path);
  src.addEventListener(event, (m) => onData(JSON.parse(m.data)));
  src.onopen = () => { conn.className = "conn up"; };
  src.onerror = () => { conn.className = "conn down"; };
  return src;
}

const shown = {};
async function swap(part, params) {
  // The part's HTML from the server, put in place when it changed; not while someone
  // types in it (their text would be lost).
  const host = document.getElementById(part);
  const typing = document.activeElement;
  if (!host || (host.contains(typing) && typing.matches("input, textarea, select"))) return;
  const q = new URLSearchParams(params === undefined ? location.search : params);
  q.set("part", part);
  let html;
  try {
    const r = await fetch(location.pathname + "?" + q, { headers: { Accept: "text/html" } });
    if (!r.ok) { conn.className = "conn down"; return; }
    html = await r.text();
  } catch (e) { conn.className = "conn down"; return; }
  conn.className = "conn up";
  if (html === shown[part]) return;
  shown[part] = html;
  host.innerHTML = html;  // rendered by the server: every value in it is escaped
}

function every(ms, parts) {
  // Parts fetched again every ms milliseconds while the page is visible.
  setInterval(() => { if (!document.hidden) for (const p of parts) swap(p); }, ms);
}

let liveParts = [];
document.addEventListener("click", async (e) => {
  // Buttons that change something: data-post (the API path), data-confirm (asked
  // first), data-reason (send the reason typed beside it), data-done (what to say).
  const b = e.target.closest("button[data-post]");
  if (!b || !CAN_ACT) return;
  e.preventDefault();
  if (b.dataset.confirm && !confirm(b.dataset.confirm)) return;
  let data;
  if (b.dataset.reason) {
    const r = b.parentElement.querySelector("input.reason");
    data = { reason: (r && r.value) || null };
  }
  const out = await act(b, b.dataset.post, data, (o) => b.dataset.done || (o && o.detail) || "done");
  if (out) for (const p of liveParts) swap(p);
});

// -- pages

function ensemblePage() {
  liveParts = ["agents", "hosts"];
  live("/agents/stream", "agents", () => swap("agents"));
  every(3000, ["hosts"]);
}

function agentPage() {
  const name = body.dataset.agent;
  const enc = encodeURIComponent(name);
  liveParts = ["info", "side"];
  const alive = () => { const a = document.getElementById("alive"); return a ? a.dataset.alive : "1"; };
  let frames = 0;
  let feed = null;
  const follow = () => {
    feed = live(`/agents/${enc}/screen/stream`, "screen", (f) => {
      if (alive() !== "1") return;  // a dead pane's screen is blank: its log's tail stays shown
      const screen = document.getElementById("screen");
      screen.innerHTML = f.html;  // escaped by the server (ansi2html)
      screen.dataset.frames = String(++frames);
      screen.dataset.time = String(f.time);
    });
    feed.addEventListener("gone", (m) => { feed.close(); feed = null; say(JSON.parse(m.data).error, true); });
  };
  follow();
  let was = alive();
  setInterval(async () => {
    if (document.hidden) return;
    await swap("info");
    const now = alive();
    if (now !== was) {  // died, or back: its screen, or its log's tail
      was = now;
      await swap("display");
      if (now === "1" && feed === null) follow();
    }
  }, 2000);
  every(5000, ["side"]);
  const form = document.getElementById("send-form");
  if (form) {
    const text = document.getElementById("send-text");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!text.value.trim()) return;
      const out = await act(document.getElementById("send"), `/agents/${enc}/messages`, { text: text.value },
        (o) => `queued ${o.id}`);
      if (out) { text.value = ""; swap("side"); }
    });
    text.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.ctrlKey) form.requestSubmit(); });
  }
  const search = document.getElementById("log-search");
  search.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(search)) if (v) q.set(k, v);
    history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q : ""));
    swap("found", q);
  });
}

function tasksPage() {
  liveParts = ["board"];
  every(5000, ["board"]);
  const add = document.getElementById("add-form");
  if (add) add.addEventListener("submit", async (e) => {
    e.preventDefault();
    const title = add.elements.title;
    if (await act(document.getElementById("add-task"), "/tasks", { title: title.value }, (t) => `added task ${t.id}`)) {
      title.value = "";
      swap("board");
    }
  });
}

function taskPage() { liveParts = ["task"]; every(5000, ["task"]); }
function storiesPage() { liveParts = ["stories"]; every(3000, ["stories"]); }
function storyPage() { liveParts = ["story"]; every(2000, ["story"]); }
function inboxPage() { liveParts = ["messages"]; every(3000, ["messages"]); }
function approvalsPage() { liveParts = ["waiting", "answers", "merges"]; every(2000, ["waiting", "answers", "merges"]); }

function eventsPage() {
  const feed = document.getElementById("feed");
  const q = new URLSearchParams(location.search);
  q.set("after", feed.dataset.after);  // the stream goes on where the page's list ended: nothing is lost
  const cell = (text, cls) => { const td = document.createElement("td"); if (cls) td.className = cls; td.textContent = text; return td; };
  live("/events/stream?" + q, "event", (e) => {
    const { time, event, agent, ...rest } = e;
    const tr = document.createElement("tr");
    tr.append(cell(time, "mono"), cell(event), cell(agent || ""), cell(JSON.stringify(rest), "mono small"));
    feed.prepend(tr);
    while (feed.rows.length > 1000) feed.deleteRow(-1);
  });
}

const PAGES = { ensemble: ensemblePage, agent: agentPage, tasks: tasksPage, task: taskPage, inbox: inboxPage,
  approvals: approvalsPage, events: eventsPage, stories: storiesPage, story: storyPage };
(PAGES[body.dataset.page] || (() => {}))();
