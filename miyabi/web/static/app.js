// miyabi's dashboard: draws each page from /api/v1. Text from agents, tasks and
// issues is untrusted: it only ever reaches the page as textContent; the one HTML
// that is set is a pane's screen, which the server escaped.
"use strict";

const body = document.body;
const TOKEN = document.querySelector('meta[name="miyabi-token"]').content;
const CAN_ACT = body.dataset.canAct === "1";
const main = document.getElementById("main");
const conn = document.getElementById("conn");

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "cls") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

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
  if (!t) { t = el("div", { id: "toast" }); body.append(t); }
  t.textContent = text;
  t.className = bad ? "bad" : "good";
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = "gone"; }, 5000);
}

async function act(button, method, path, data, done) {
  button.disabled = true;
  try {
    const out = await api(method, path, data);
    say(done ? done(out) : "done");
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

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.round(seconds);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0");
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0");
  return Math.floor(s / 86400) + "d" + Math.floor(s % 86400 / 3600) + "h";
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}

function safeUrl(u) { return typeof u === "string" && /^https?:\/\//i.test(u) ? u : null; }

function stateBadge(state) { return el("span", { cls: "state s-" + state }, state); }

function card(a) {
  const task = a.current_task;
  const tokens = a.input_tokens === null ? null :
    `${a.input_tokens} in / ${a.output_tokens} out` + (a.cost_usd !== null ? ` · $${a.cost_usd.toFixed(2)}` : "");
  return el("a", { cls: "card s-" + a.state, href: "/agents/" + encodeURIComponent(a.name), "data-agent": a.name },
    el("div", { cls: "row" }, el("b", {}, a.name), stateBadge(a.state)),
    a.question ? el("div", { cls: "question" }, a.question) : null,
    el("div", { cls: "task" }, task ? `${task.ref} ${task.title}` : "no task"),
    el("dl", {},
      el("dt", {}, "uptime"), el("dd", {}, ago(a.uptime)),
      el("dt", {}, "restarts/h"), el("dd", {}, a.restarts_last_hour),
      el("dt", {}, "last output"), el("dd", {}, ago(a.last_output)),
      el("dt", {}, "cpu / rss"), el("dd", {}, (a.cpu_percent === null ? "-" : a.cpu_percent.toFixed(1) + "%") + " / " + bytes(a.rss)),
      tokens ? [el("dt", {}, "tokens"), el("dd", {}, tokens)] : null),
    a.last_reason ? el("div", { cls: "muted small" }, a.last_reason) : null);
}

function controllerLine(c) {
  if (!c) return null;
  return el("p", { cls: c.running ? "muted" : "bad" },
    c.running ? `controller running, pid ${c.pid}, up ${ago(c.uptime)}` + (c.restarts ? `, restarted ${c.restarts}×` : "")
      : `controller not running: messages and tasks wait; start it with ${c.fix}`);
}

// -- pages

function ensemblePage() {
  const grid = el("div", { cls: "cards", id: "cards" });
  const head = el("div", {});
  const hosts = el("div", { id: "hosts" });
  main.replaceChildren(head, grid, hosts);
  const showHosts = async () => {
    try {
      const d = await api("GET", "/hosts");
      if (!d.bus) { hosts.replaceChildren(); return; }
      const line = d.bus.state === "up"
        ? el("p", { cls: "ok" }, `bus: up at ${d.bus.url} as host ${d.bus.host}, ${d.bus.hosts} host(s) up`)
        : el("p", { cls: "bad" }, `bus: down since ${d.bus.since} (${d.bus.error || "not reached yet"})`);
      const rows = (d.hosts || []).map((h) => el("tr", { "data-host": h.host },
        el("td", {}, h.host), el("td", { cls: h.up ? "ok" : "bad" }, h.up ? "up" : "down since " + h.last_seen),
        el("td", {}, (h.agents || []).map((a) => `${a.name}: ${a.state}`).join(", ") || "-")));
      hosts.replaceChildren(el("h3", {}, "hosts"), line, ...(d.error ? [el("p", { cls: "bad" }, d.error)] : []),
        el("table", {}, el("tr", {}, el("th", {}, "host"), el("th", {}, "state"), el("th", {}, "agents")), ...rows));
    } catch (err) { hosts.replaceChildren(el("p", { cls: "bad" }, err.message)); }
  };
  showHosts();
  setInterval(showHosts, 3000);
  live("/agents/stream", "agents", (d) => {
    if (d.error) { head.replaceChildren(el("p", { cls: "bad" }, d.error)); return; }
    head.replaceChildren(controllerLine(d.controller));
    const pools = {};
    const named = [];
    for (const a of d.agents) (a.pool ? (pools[a.pool] = pools[a.pool] || []) : named).push(a);
    grid.replaceChildren(...named.map(card),
      ...Object.entries(pools).flatMap(([p, as]) => [el("h3", { cls: "pool" }, "pool " + p), ...as.map(card)]));
  });
}

function agentPage() {
  const name = body.dataset.agent;
  const screen = el("pre", { cls: "screen", id: "screen" });
  const info = el("div", { cls: "info" });
  const actions = el("div", { cls: "actions" });
  const side = el("div", { cls: "side" });
  const found = el("pre", { cls: "body", id: "log-lines" });
  const grep = el("input", { name: "grep", placeholder: "search the pane log (regular expression)", size: 40 });
  const since = el("input", { name: "since", placeholder: "since (1h, 2d)", size: 10 });
  const search = el("form", { cls: "filters", id: "log-search", onsubmit: async (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ limit: "500" });
    if (grep.value) q.set("grep", grep.value);
    if (since.value) q.set("since", since.value);
    try {
      const lines = await api("GET", `/agents/${encodeURIComponent(name)}/logs?` + q);
      found.textContent = lines.length ? lines.map((l) => l.text).join("\n") : "(no line matches)";
    } catch (err) { found.textContent = err.message; }
  } }, grep, since, el("button", {}, "Search"));
  main.replaceChildren(el("h2", {}, name), info, actions, el("div", { cls: "split" }, screen, side),
    el("h3", {}, "pane log"), search, found);
  let frames = 0;
  const screenFeed = live("/agents/" + encodeURIComponent(name) + "/screen/stream", "screen", (f) => {
    screen.innerHTML = f.html;  // escaped by the server (ansi2html)
    screen.dataset.frames = String(++frames);
    screen.dataset.time = String(f.time);
  });
  screenFeed.addEventListener("gone", (m) => { screenFeed.close(); say(JSON.parse(m.data).error, true); });
  let state = null;
  const asks = el("span", { cls: "asks" });
  const drawAsks = () => asks.replaceChildren(...(CAN_ACT && state === "waiting-approval" ? approvalButtons(name) : []));
  if (CAN_ACT) {
    // drawn once: text being typed survives the agent's state changes
    const text = el("textarea", { id: "send-text", rows: 2, placeholder: "message to " + name + " (Ctrl+Enter sends)" });
    const send = el("button", { id: "send", onclick: async () => {
      if (!text.value.trim()) return;
      const out = await act(send, "POST", `/agents/${encodeURIComponent(name)}/messages`, { text: text.value },
        (o) => `queued ${o.id}`);
      if (out) text.value = "";
    } }, "Send");
    text.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.ctrlKey) send.click(); });
    const restart = el("button", { id: "restart", onclick: () => {
      if (confirm(`Restart ${name}?`)) act(restart, "POST", `/agents/${encodeURIComponent(name)}/restart`, undefined, (o) => o.detail);
    } }, "Restart");
    actions.append(el("div", { cls: "sendbox" }, text, send), restart, asks);
  }
  const refresh = async () => {
    try {
      const a = await api("GET", "/agents/" + encodeURIComponent(name));
      info.replaceChildren(stateBadge(a.state), " ", a.question ? el("span", { cls: "question" }, a.question) : "",
        el("span", { cls: "muted" }, ` pane ${a.pane_id || "-"} · pid ${a.pid || "-"} · up ${ago(a.uptime)} · restarts/h ${a.restarts_last_hour}`),
        a.current_task ? el("div", {}, "task ", el("a", { href: "/tasks/" + a.current_task.id }, `${a.current_task.ref} ${a.current_task.title}`)) : "");
      if (a.state !== state) { state = a.state; drawAsks(); }
    } catch (e) { info.replaceChildren(el("span", { cls: "bad" }, e.message)); }
  };
  refresh();
  setInterval(refresh, 2000);
  const drawSide = async () => {
    const [msgs, crashes] = await Promise.all([
      api("GET", `/agents/${encodeURIComponent(name)}/messages?state=pending&state=failed`),
      api("GET", `/agents/${encodeURIComponent(name)}/crashes`)]);
    side.replaceChildren(el("h3", {}, "inbox"), msgs.length ? messageTable(msgs, drawSide) : el("p", { cls: "muted" }, "empty"),
      el("h3", {}, "crash evidence"),
      crashes.length ? el("ul", {}, crashes.map((c) => el("li", {},
        el("a", { href: `/api/v1/agents/${encodeURIComponent(name)}/crashes/${encodeURIComponent(c.file)}`, target: "_blank" }, c.file),
        el("span", { cls: "muted" }, " " + c.time)))) : el("p", { cls: "muted" }, "none"));
  };
  drawSide().catch((e) => say(e.message, true));
  setInterval(() => drawSide().catch(() => {}), 5000);
}

function approvalButtons(name) {
  const reason = el("input", { cls: "reason", placeholder: "reason (optional, for deny)" });
  const yes = el("button", { cls: "approve", onclick: () => act(yes, "POST", `/agents/${encodeURIComponent(name)}/approve`, undefined,
    (o) => `approved ${o.agent}: ${o.question}`) }, "Approve");
  const no = el("button", { cls: "deny", onclick: () => act(no, "POST", `/agents/${encodeURIComponent(name)}/deny`,
    { reason: reason.value || null }, (o) => `denied ${o.agent}`) }, "Deny");
  return [yes, no, reason];
}

function messageTable(msgs, redraw) {
  return el("table", {}, el("tr", {}, ["id", "to", "state", "from", "time", "text / reason", ""].map((h) => el("th", {}, h))),
    msgs.map((m) => {
      const btns = [];
      if (CAN_ACT && m.state === "failed") {
        const b = el("button", { onclick: async () => { if (await act(b, "POST", `/messages/${m.id}/retry`, undefined, () => "pending again")) redraw(); } }, "Retry");
        btns.push(b);
      }
      if (CAN_ACT && m.state === "pending") {
        const b = el("button", { onclick: async () => { if (await act(b, "POST", `/messages/${m.id}/drop`, undefined, () => "dropped")) redraw(); } }, "Drop");
        btns.push(b);
      }
      return el("tr", {}, el("td", { cls: "mono" }, m.id.slice(0, 13)), el("td", {}, m.to), el("td", {}, stateBadge(m.state)),
        el("td", {}, m.from), el("td", {}, m.failed || m.delivered || m.created), el("td", { cls: "text" }, m.reason || m.body.slice(0, 200)),
        el("td", {}, btns));
    }));
}

const TASK_STATES = ["queued", "blocked", "assigned", "in_progress", "verifying", "shared", "done", "failed", "cancelled"];

function tasksPage() {
  const params = new URLSearchParams(location.search);
  const f = {};
  const filters = el("form", { cls: "filters", onsubmit: (e) => { e.preventDefault(); draw(); } },
    ...["agent", "label"].map((k) => (f[k] = el("input", { name: k, placeholder: k, value: params.get(k) || "" }))),
    (f.source = el("select", { name: "source" }, ["", "local", "github", "job"].map((s) => el("option", { value: s, selected: params.get("source") === s }, s || "any source")))),
    el("button", {}, "Filter"));
  const board = el("div", { cls: "board" });
  const add = CAN_ACT ? el("form", { cls: "filters", onsubmit: async (e) => {
    e.preventDefault();
    const title = e.target.elements.title;
    const button = e.submitter || e.target.querySelector("button");
    if (await act(button, "POST", "/tasks", { title: title.value }, (t) => `added task ${t.id}`)) { title.value = ""; draw(); }
  } }, el("input", { name: "title", placeholder: "new task title", required: true, size: 50 }), el("button", { id: "add-task" }, "Add task")) : null;
  main.replaceChildren(filters, add, board);
  async function draw() {
    const q = new URLSearchParams();
    for (const k of ["agent", "label", "source"]) if (f[k].value) q.set(k, f[k].value);
    history.replaceState(null, "", "/tasks" + (q.toString() ? "?" + q : ""));
    try {
      const tasks = await api("GET", "/tasks?" + q);
      board.replaceChildren(...TASK_STATES.map((s) => {
        const here = tasks.filter((t) => t.state === s);
        return el("section", { cls: "column", "data-state": s }, el("h3", {}, `${s} (${here.length})`),
          here.map((t) => el("a", { cls: "tcard", href: "/tasks/" + t.id },
            el("div", {}, el("b", {}, t.ref), " ", t.title),
            el("div", { cls: "muted small" }, [t.agent || "", t.labels.join(", "), t.source].filter(Boolean).join(" · ")),
            t.waiting ? el("div", { cls: "small warn" }, t.waiting) : null)));
      }));
    } catch (e) { board.replaceChildren(el("p", { cls: "bad" }, e.message)); }
  }
  draw();
  setInterval(draw, 5000);
}

function taskPage() {
  const ref = body.dataset.task;
  async function draw() {
    let t;
    try { t = await api("GET", "/tasks/" + encodeURIComponent(ref)); } catch (e) { main.replaceChildren(el("p", { cls: "bad" }, e.message)); return; }
    const btns = [];
    if (CAN_ACT && ["queued", "blocked", "assigned", "in_progress", "verifying", "shared"].includes(t.state)) {
      const b = el("button", { id: "cancel", onclick: async () => { if (await act(b, "POST", `/tasks/${t.id}/cancel`, undefined, () => "cancelled")) draw(); } }, "Cancel");
      btns.push(b);
    }
    if (CAN_ACT && ["failed", "cancelled"].includes(t.state)) {
      const b = el("button", { id: "retry", onclick: async () => { if (await act(b, "POST", `/tasks/${t.id}/retry`, undefined, () => "queued again")) draw(); } }, "Retry");
      btns.push(b);
    }
    main.replaceChildren(
      el("h2", {}, `${t.ref} `, stateBadge(t.state), " ", t.title),
      el("p", {}, safeUrl(t.url) ? el("a", { href: safeUrl(t.url), rel: "noreferrer", target: "_blank" }, "issue") : null, " ",
        t.pull_request && safeUrl(t.pull_request.url) ? el("a", { href: safeUrl(t.pull_request.url), rel: "noreferrer", target: "_blank", id: "pr-link" }, `pull request #${t.pull_request.number}`) : null,
        ` agent ${t.agent || "-"} · priority ${t.priority} · labels ${t.labels.join(", ") || "-"} · attempts ${t.attempts}`,
        t.branch ? ` · branch ${t.branch}` : "", t.usage ? ` · tokens ${t.usage.input_tokens} in / ${t.usage.output_tokens} out` : ""),
      t.waiting ? el("p", { cls: "warn" }, "waiting because: " + t.waiting) : null,
      el("div", { cls: "actions" }, btns),
      t.body ? el("pre", { cls: "body" }, t.body) : null,
      el("h3", {}, "history"),
      el("table", {}, el("tr", {}, ["time", "state", "agent", "reason"].map((h) => el("th", {}, h))),
        t.history.map((h) => el("tr", {}, el("td", {}, h.time), el("td", {}, stateBadge(h.state)), el("td", {}, h.agent || ""), el("td", {}, h.reason || "")))));
  }
  draw();
}

function inboxPage() {
  async function draw() {
    try {
      const msgs = await api("GET", "/messages?state=pending&state=failed");
      main.replaceChildren(el("h2", {}, "Pending messages and dead letters"),
        msgs.length ? messageTable(msgs, draw) : el("p", { cls: "muted" }, "every inbox is empty"));
    } catch (e) { main.replaceChildren(el("p", { cls: "bad" }, e.message)); }
  }
  draw();
  setInterval(draw, 3000);
}

function approvalsPage() {
  const waiting = el("div", { id: "waiting" });
  const audit = el("div", {});
  main.replaceChildren(el("h2", {}, "Waiting for approval"), waiting, el("h2", {}, "Answers"), audit);
  let shown = "";
  async function draw() {
    const d = await api("GET", "/approvals");
    const key = JSON.stringify(d.waiting);
    if (key !== shown) {
      shown = key;
      waiting.replaceChildren(d.waiting.length ? el("table", {}, d.waiting.map((w) => el("tr", { "data-agent": w.agent },
        el("td", {}, el("a", { href: "/agents/" + encodeURIComponent(w.agent) }, w.agent)), el("td", { cls: "question" }, w.question || ""),
        el("td", {}, CAN_ACT ? approvalButtons(w.agent) : "")))) : el("p", { cls: "muted" }, "nobody is waiting"));
    }
    audit.replaceChildren(el("table", {}, el("tr", {}, ["time", "agent", "answer", "by", "question", "reason"].map((h) => el("th", {}, h))),
      d.answers.map((a) => el("tr", {}, el("td", {}, a.time), el("td", {}, a.agent), el("td", {}, a.answer), el("td", {}, a.by),
        el("td", {}, a.question || ""), el("td", {}, a.reason || "")))));
  }
  draw().catch((e) => say(e.message, true));
  setInterval(() => draw().catch(() => {}), 2000);
}

function eventsPage() {
  const params = new URLSearchParams(location.search);
  const f = {};
  const feed = el("table", { id: "feed" });
  const filters = el("form", { cls: "filters", onsubmit: (e) => { e.preventDefault(); start(); } },
    ...["event", "agent", "grep"].map((k) => (f[k] = el("input", { name: k, placeholder: k === "event" ? "event (a,b)" : k, value: params.get(k) || "" }))),
    el("button", {}, "Filter"));
  main.replaceChildren(filters, feed);
  let src = null;
  const row = (e) => {
    const { time, event, agent, ...rest } = e;
    return el("tr", {}, el("td", { cls: "mono" }, time), el("td", {}, event), el("td", {}, agent || ""), el("td", { cls: "mono small" }, JSON.stringify(rest)));
  };
  async function start() {
    if (src) src.close();
    const q = new URLSearchParams();
    for (const k of ["event", "agent", "grep"]) if (f[k].value) q.set(k, f[k].value);
    history.replaceState(null, "", "/events" + (q.toString() ? "?" + q : ""));
    let after = null;
    try {
      const r = await fetch("/api/v1/events?limit=200&" + q);
      const past = await r.json();
      if (!r.ok) throw new Error(past.error || r.statusText);
      after = r.headers.get("x-events-offset");  // the stream goes on from there: nothing logged meanwhile is lost
      feed.replaceChildren(...past.reverse().map(row));
    } catch (e) { say(e.message, true); return; }
    src = live("/events/stream?" + q + (after ? "&after=" + after : ""), "event", (e) => {
      feed.prepend(row(e));
      while (feed.rows.length > 1000) feed.deleteRow(-1);
    });
  }
  start();
}

function kpisPage() {
  const params = new URLSearchParams(location.search);
  let since = params.get("since") === "7d" ? "7d" : "24h";
  const pick = el("div", { cls: "filters" });
  const body_ = el("div", {});
  main.replaceChildren(pick, body_);
  const table = (headers, rows) => el("table", {}, el("tr", {}, headers.map((h) => el("th", {}, h))),
    rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c)))));
  async function draw() {
    history.replaceState(null, "", "/kpis?since=" + since);
    pick.replaceChildren(...["24h", "7d"].map((w) => el("button", { cls: w === since ? "on" : "", "data-since": w,
      onclick: () => { since = w; draw(); } }, "last " + w)));
    let d;
    try { d = await api("GET", "/kpis?since=" + since); } catch (e) { body_.replaceChildren(el("p", { cls: "bad" }, e.message)); return; }
    body_.replaceChildren(
      table(["figure", "value"], d.summary),
      el("div", { cls: "charts" }, d.charts.map((c) => el("figure", {},
        el("img", { src: `/api/v1/kpis/charts/${c.name}.svg?since=${since}`, alt: c.title, "data-chart": c.name }),
        el("figcaption", {}, c.title)))),
      el("h3", {}, "per agent"), table(d.agents.headers, d.agents.rows),
      el("h3", {}, "per day"), table(d.days.headers, d.days.rows),
      el("dl", { cls: "small muted" }, d.definitions.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  }
  draw();
}

const PAGES = { ensemble: ensemblePage, agent: agentPage, tasks: tasksPage, task: taskPage, inbox: inboxPage,
  approvals: approvalsPage, events: eventsPage, kpis: kpisPage };
(PAGES[body.dataset.page] || (() => {}))();
