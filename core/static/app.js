// The alpr-topo status page: the stage graph and table from server-sent status snapshots,
// camera previews, latest plate events and logs by polling, and controls that call the same
// control API as the CLI (POST /api/stages/STAGE/ACTION with the run's bearer token).
// Plain JavaScript, no build step, no CDN. Text from the run is always set with textContent.
"use strict";

const $ = (selector) => document.querySelector(selector);
const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "alpr-topo-token";
const state = { token: "", topo: null, status: null, outputs: new Set(), rows: new Map(), logStage: null, history: new Map() };
const RATE_WINDOW_S = 5;  // frames per second over the last few seconds: steadier than one heartbeat's rate

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const fmt = (value, digits = 1) => (value === null || value === undefined ? "-" : typeof value === "number" && !Number.isInteger(value) ? value.toFixed(digits) : String(value));
const sum = (rows, key) => rows.reduce((total, row) => total + (row[key] || 0), 0);
const max = (rows, key) => rows.some((row) => row[key] !== null && row[key] !== undefined) ? Math.max(...rows.map((row) => row[key] ?? -Infinity)) : null;

function say(text, error = false) {
  const box = $("#message");
  box.textContent = text;
  box.className = error ? "error" : "";
  box.hidden = false;
}

// -- token ---------------------------------------------------------------------------------------

function loadToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {  // the URL printed by `alpr-topo up`; kept for this tab only, and taken out of the address bar
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
  state.token = sessionStorage.getItem(TOKEN_KEY) || "";
  renderToken();
}

function renderToken() {
  const badge = $("#token-state");
  badge.textContent = state.token ? "controls unlocked" : "read-only";
  badge.className = "badge " + (state.token ? "unlocked" : "locked");
  $("#token-input").hidden = $("#token-save").hidden = Boolean(state.token);
  $("#token-clear").hidden = !state.token;
}

async function post(path, body = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  let data = {};
  try { data = await response.json(); } catch (e) { /* empty body */ }
  return { ok: response.ok, status: response.status, data };
}

$("#token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const given = $("#token-input").value.trim();
  if (!given) return;
  state.token = given;
  const result = await post("/api/token");
  if (!result.ok) {
    state.token = "";
    say(`refused (${result.status}): that is not the token printed by alpr-topo up`, true);
  } else {
    sessionStorage.setItem(TOKEN_KEY, given);
    $("#token-input").value = "";
    say("controls unlocked");
  }
  renderToken();
});
$("#token-clear").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); state.token = ""; renderToken(); });

// -- topology and graph --------------------------------------------------------------------------

async function loadTopology() {
  const response = await fetch("/api/topology");
  if (!response.ok) throw new Error("topology: " + response.status);
  state.topo = await response.json();
  state.outputs = new Set(state.topo.stages.flatMap((s) => s.inputs));
  drawGraph();
  fillLogStages();
}

const NODE_W = 210, NODE_H = 104, GAP_X = 56, GAP_Y = 16;

function drawGraph() {
  const stages = state.topo.stages.filter((s) => s.here);
  const depth = {};
  for (const stage of state.topo.stages) {  // topological order: inputs come first
    depth[stage.name] = stage.inputs.length ? 1 + Math.max(...stage.inputs.map((i) => depth[i] ?? 0)) : 0;
  }
  const columns = {};
  const position = {};
  for (const stage of stages) {
    const col = depth[stage.name];
    columns[col] = (columns[col] || 0) + 1;
    position[stage.name] = { x: 8 + col * (NODE_W + GAP_X), y: 8 + (columns[col] - 1) * (NODE_H + GAP_Y) };
  }
  const width = 16 + (Math.max(0, ...Object.keys(columns).map(Number)) + 1) * (NODE_W + GAP_X) - GAP_X;
  const height = 16 + Math.max(1, ...Object.values(columns)) * (NODE_H + GAP_Y) - GAP_Y;
  const svg = $("#graph");
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.append(el("svg:defs", {}, el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto" },
    el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#a0aec0" }))));
  for (const stage of stages) {
    for (const input of stage.inputs) {
      const a = position[input], b = position[stage.name];
      if (!a) continue;
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 2, y2 = b.y + NODE_H / 2;
      svg.append(el("svg:path", { class: "edge", d: `M${x1},${y1} C${x1 + GAP_X / 2},${y1} ${x2 - GAP_X / 2},${y2} ${x2},${y2}` }));
    }
  }
  for (const stage of stages) {
    const { x, y } = position[stage.name];
    const line = (cls, dy, text = "") => el("svg:text", { class: cls, x: x + 14, y: y + dy, text });
    const node = el("svg:g", { class: "node", "data-stage": stage.name, onclick: () => selectLog(stage.name) },
      el("svg:rect", { x, y, width: NODE_W, height: NODE_H }),
      el("svg:rect", { class: "bar", x: x, y: y, width: 6, height: NODE_H, fill: "var(--starting)" }),
      line("name", 18, stage.name + (stage.replicas > 1 ? `  ×${stage.replicas}` : "")),
      line("type", 33, stage.type),
      line("state", 50, "…"),
      line("rate", 66),
      line("latency", 81),
      line("usage", 96));
    svg.append(node);
  }
}

function smoothRates(status) {
  // Per replica, the rate of its counter over RATE_WINDOW_S of snapshots; a restarted process
  // (counter lower than before) starts a new history.
  for (const row of status.stages) {
    const key = `${row.stage}:${row.replica}:${row.instance}`;
    const count = state.outputs.has(row.stage) ? row.frames_out : row.frames_in;
    let seen = state.history.get(key) || [];
    if (seen.length && count < seen[seen.length - 1][1]) seen = [];
    seen.push([status.uptime_s, count]);
    while (seen.length > 2 && status.uptime_s - seen[1][0] >= RATE_WINDOW_S) seen.shift();
    state.history.set(key, seen);
    const [t0, c0] = seen[0];
    row.fps = seen.length > 1 && status.uptime_s > t0 ? (count - c0) / (status.uptime_s - t0)
      : (state.outputs.has(row.stage) ? row.fps_out : row.fps_in);
  }
}

function updateGraph(rows) {
  for (const node of document.querySelectorAll("#graph .node")) {
    const name = node.dataset.stage;
    const mine = rows.filter((r) => r.stage === name);
    if (!mine.length) continue;
    const states = [...new Set(mine.map((r) => r.state))];
    const fps = sum(mine, "fps");
    node.querySelector(".name").textContent = name + (mine.length > 1 ? `  ×${mine.length}` : "");
    node.querySelector(".type").textContent = mine[0].type;
    node.querySelector(".state").textContent = states.join(" / ");
    node.querySelector(".state").setAttribute("fill", `var(--${states[0]}, #333)`);
    node.querySelector(".bar").setAttribute("fill", `var(--${states.includes("failed") ? "failed" : states[0]}, #999)`);
    node.querySelector(".rate").textContent = `${fps.toFixed(1)} fps   q ${sum(mine, "queue_in")} in / ${sum(mine, "queue_out")} out`;
    const p50 = max(mine, "latency_p50_ms"), p99 = max(mine, "latency_p99_ms");
    node.querySelector(".latency").textContent = p50 === null ? "latency -" : `p50 ${fmt(p50, 2)}  p99 ${fmt(p99, 2)} ms`;
    node.querySelector(".usage").textContent = `cpu ${fmt(sum(mine, "cpu_percent"), 0)}%  ${fmt(sum(mine, "rss_mb"), 0)} MB  ↻ ${sum(mine, "restarts")}`;
  }
}

// -- table and controls --------------------------------------------------------------------------

const FIELDS = ["pid", "state", "frames_in", "frames_out", "fps", "queue_in", "queue_out", "latency_p50_ms", "latency_p99_ms", "restarts", "cpu_percent", "rss_mb"];

function buildTable(rows) {
  const body = $("#stages tbody");
  body.replaceChildren();
  state.rows.clear();
  for (const row of rows) {
    const label = row.stage + (rows.some((r) => r.stage === row.stage && r.replica > 0) ? `[${row.replica}]` : "");
    const tr = el("tr", { "data-stage": row.stage, "data-replica": row.replica },
      el("td", { text: label }), el("td", { "data-field": "type", text: row.type }));
    for (const field of FIELDS) {
      tr.append(el("td", { "data-field": field, class: field === "state" || field === "pid" ? "" : "num" }));
    }
    const controls = el("td", { class: "controls" });
    if (row.replica === 0) {
      const button = (action, text, title) => el("button", { type: "button", "data-action": action, "data-stage": row.stage, title, text,
        onclick: (event) => act(row.stage, event.currentTarget.dataset.action) });  // Stop turns into Start
      controls.append(button("restart", "Restart", "kill and restart every replica (frames it holds are lost)"),
        button("stop", "Stop", "drain and keep stopped until Start"),
        button("swap", "Swap…", "replace with another type or parameters, losing no frame"));
    }
    tr.append(controls);
    body.append(tr);
    state.rows.set(`${row.stage}:${row.replica}`, tr);
  }
}

function updateTable(rows) {
  if (rows.length !== state.rows.size || rows.some((r) => !state.rows.has(`${r.stage}:${r.replica}`))) buildTable(rows);
  for (const row of rows) {
    const tr = state.rows.get(`${row.stage}:${row.replica}`);
    const values = { ...row, fps: row.fps.toFixed(1), cpu_percent: row.cpu_percent === null ? null : Math.round(row.cpu_percent) };
    for (const field of FIELDS) {
      const cell = tr.querySelector(`[data-field="${field}"]`);
      cell.textContent = fmt(values[field], field.startsWith("latency") ? 2 : 1);
      if (field === "state") cell.className = "state " + row.state;
    }
    tr.querySelector('[data-field="type"]').textContent = row.type;
    const stopButton = tr.querySelector('button[data-action="stop"], button[data-action="start"]');
    if (stopButton) {
      const stopped = rows.filter((r) => r.stage === row.stage).every((r) => r.state === "stopped");
      stopButton.dataset.action = stopped ? "start" : "stop";
      stopButton.textContent = stopped ? "Start" : "Stop";
    }
  }
}

async function act(stage, action) {
  if (action === "swap") return openSwap(stage);
  say(`${action} '${stage}'…`);
  const result = await post(`/api/stages/${encodeURIComponent(stage)}/${action}`);
  if (result.ok) say(`${action}: '${stage}' ok`);
  else say(`${action} '${stage}' refused (${result.status}): ${result.data.error || "error"}`, true);
}

// -- hot swap ------------------------------------------------------------------------------------

function openSwap(stage) {
  const decl = state.topo.stages.find((s) => s.name === stage);
  const select = $("#swap-type");
  select.replaceChildren();
  for (const type of state.topo.types.filter((t) => t.source === decl.source)) {
    select.append(el("option", { value: type.type, text: type.type + (type.type === decl.type ? "  (current)" : "") }));
  }
  select.value = decl.type;
  $("#swap-stage").textContent = `'${stage}'`;
  $("#swap-form").dataset.stage = stage;
  showSchema(decl);
  $("#swap-dialog").showModal();
}

function showSchema(decl) {
  const chosen = $("#swap-type").value;
  const type = state.topo.types.find((t) => t.type === chosen);
  $("#swap-params").value = JSON.stringify(chosen === decl.type ? decl.params : {}, null, 2);
  const lines = Object.entries(type ? type.params : {}).map(([name, schema]) =>
    `${name}${type.required.includes(name) ? " (required)" : ` = ${JSON.stringify(schema.default)}`}${schema.description ? ": " + schema.description : ""}`);
  $("#swap-schema").textContent = lines.length ? lines.join(" · ") : "no parameters";
}

$("#swap-type").addEventListener("change", () => showSchema(state.topo.stages.find((s) => s.name === $("#swap-form").dataset.stage)));
$("#swap-cancel").addEventListener("click", () => $("#swap-dialog").close());
$("#swap-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const stage = $("#swap-form").dataset.stage;
  let params;
  try {
    params = JSON.parse($("#swap-params").value || "{}");
    if (typeof params !== "object" || Array.isArray(params) || params === null) throw new Error("not an object");
  } catch (e) {
    say(`parameters must be a JSON object: ${e.message}`, true);
    return;
  }
  const type = $("#swap-type").value;
  $("#swap-dialog").close();
  say(`swapping '${stage}' to ${type}…`);
  const started = performance.now();
  const result = await post(`/api/stages/${encodeURIComponent(stage)}/swap`, { type, params });
  if (result.ok) {
    say(`swapped '${stage}' to ${result.data.type} ${JSON.stringify(result.data.params)} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    loadTopology().catch(() => {});
  } else {
    say(`swap of '${stage}' refused (${result.status}): ${result.data.error || "error"}`, true);
  }
});

// -- live status (server-sent events) ------------------------------------------------------------

function onStatus(status) {
  const live = $("#live");
  if (status.error) {
    live.textContent = "supervisor not answering";
    live.className = "badge down";
    return;
  }
  state.status = status;
  live.textContent = "live";
  live.className = "badge live";
  $("#run-name").textContent = status.name;
  $("#run-info").textContent = `pid ${status.pid} · up ${Math.round(status.uptime_s)} s · ${status.topology}`;
  const flags = $("#run-flags");
  flags.replaceChildren();
  if (status.shutting_down) flags.append(el("span", { class: "badge warn", text: "shutting down" }));
  if (status.swap) flags.append(el("span", { class: "badge warn", text: `swapping ${status.swap}` }));
  smoothRates(status);
  updateGraph(status.stages);
  updateTable(status.stages);
}

function connect() {
  const source = new EventSource("/api/stream");
  source.addEventListener("status", (event) => onStatus(JSON.parse(event.data)));
  source.onerror = () => {
    $("#live").textContent = "disconnected (run ended?)";
    $("#live").className = "badge down";
  };
}

// -- previews, events, logs (polled) -------------------------------------------------------------

async function refreshPreviews() {
  const response = await fetch("/api/preview");
  if (!response.ok) return;
  const { cameras } = await response.json();
  const box = $("#previews");
  if (!cameras.length) return;
  if (box.querySelector("p")) box.replaceChildren();
  for (const cam of cameras) {
    let figure = box.querySelector(`figure[data-camera="${CSS.escape(cam.camera)}"]`);
    if (!figure) {
      figure = el("figure", { "data-camera": cam.camera }, el("img", { alt: `camera ${cam.camera}` }), el("figcaption"));
      box.append(figure);
    }
    const img = figure.querySelector("img");
    if (img.getAttribute("src") !== cam.url) img.setAttribute("src", cam.url);
    figure.querySelector("figcaption").textContent = `${cam.camera} · after ${cam.stage} · ${cam.age_s.toFixed(1)} s ago`;
  }
}

function capturedText(value) {
  const date = typeof value === "number" ? new Date(value) : new Date(String(value));
  return isNaN(date) ? String(value ?? "-") : date.toLocaleTimeString();
}

async function refreshEvents() {
  const response = await fetch("/api/events");
  if (!response.ok) return;
  const { events } = await response.json();
  if (!events.length) return;
  const body = $("#events tbody");
  body.replaceChildren();
  for (const e of events) {
    const plate = e.plate || {};
    const crop = e.crop_url ? el("img", { src: e.crop_url, alt: "plate crop" }) : "";
    body.append(el("tr", { "data-event": e.event_id || "" },
      el("td", {}, crop), el("td", { class: "plate", text: plate.normalized_text || plate.text || "?" }),
      el("td", { class: "num", text: plate.confidence === undefined ? "-" : Number(plate.confidence).toFixed(2) }),
      el("td", { text: e.camera_id || "-" }), el("td", { text: e.track_id ?? "-" }),
      el("td", { text: capturedText(e.captured_at) })));
  }
}

async function fillLogStages() {
  const response = await fetch("/api/logs");
  if (!response.ok) return;
  const { stages } = await response.json();
  const select = $("#log-stage");
  const current = state.logStage;
  select.replaceChildren(...stages.map((name) => el("option", { value: name, text: name })));
  state.logStage = stages.includes(current) ? current : stages.find((s) => s !== "supervisor") || stages[0] || null;
  if (state.logStage) select.value = state.logStage;
  refreshLog();
}

function selectLog(stage) {
  for (const node of document.querySelectorAll("#graph .node")) node.classList.toggle("selected", node.dataset.stage === stage);
  if ([...$("#log-stage").options].some((o) => o.value === stage)) {
    state.logStage = stage;
    $("#log-stage").value = stage;
    refreshLog();
  }
}

async function refreshLog() {
  if (!state.logStage) return;
  const response = await fetch(`/api/logs/${encodeURIComponent(state.logStage)}?lines=200`);
  if (!response.ok) return;
  const { lines } = await response.json();
  const pre = $("#log");
  pre.textContent = lines.join("\n");
  if ($("#log-follow").checked) pre.scrollTop = pre.scrollHeight;
}

$("#log-stage").addEventListener("change", (event) => selectLog(event.target.value));

function every(ms, fn) {
  const run = () => fn().catch(() => {}).finally(() => setTimeout(run, ms));
  run();
}

loadToken();
loadTopology().then(connect).catch((e) => say(`cannot load the topology: ${e.message}`, true));
every(2000, refreshPreviews);
every(3000, refreshEvents);
every(2000, () => ($("#log-follow").checked ? refreshLog() : Promise.resolve()));
every(10000, fillLogStages);
