// gatorapp dashboard: polls /api/overview and writes what comes back into
// the page as text (textContent, never innerHTML), so no data can become HTML.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
let deadQueue = null;
let lastLook = null;
let openLetter = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d" + String(Math.floor((s % 86400) / 3600)).padStart(2, "0") + "h";
}

function when(t) {
  return t ? new Date(t * 1000).toLocaleString() : "–";
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString();
}

function message(text, bad) {
  const m = $("message");
  m.textContent = text;
  m.className = bad ? "message bad" : "message";
  m.hidden = false;
  clearTimeout(message.timer);
  message.timer = setTimeout(() => { m.hidden = true; }, 4000);
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  };
  init.credentials = "same-origin";
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok && r.status !== 404) throw new Error(data.error || r.status + " " + r.statusText);
  return data;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function drawChart(points) {
  // Drawn at the canvas's own size on screen, in device pixels: sharp on any
  // screen, never stretched when the window is narrow.
  const c = $("chart");
  const box = c.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  const w = Math.max(200, box.width), h = Math.max(100, box.height);
  c.width = Math.round(w * ratio);
  c.height = Math.round(h * ratio);
  const ctx = c.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const pad = 36, bottom = 20;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7280";
  if (points === null) {
    ctx.fillText("this backend keeps no list of workers: no counts to chart", pad, h / 2);
    return;
  }
  if (points.length === 1) points = [[points[0][0] - 2, points[0][1]], points[0]];
  if (points.length < 2) {
    ctx.fillText("collecting… (a point every 2 s while this page is open)", pad, h / 2);
    return;
  }
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const top = Math.max(1, ...points.map((p) => p[1]));
  const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - pad - 8);
  const y = (v) => h - bottom - (v / top) * (h - bottom - 12);
  ctx.strokeStyle = "#e5e7eb";
  ctx.beginPath(); ctx.moveTo(pad, y(0)); ctx.lineTo(w - 8, y(0)); ctx.stroke();
  ctx.beginPath(); ctx.moveTo(pad, y(top)); ctx.lineTo(w - 8, y(top)); ctx.stroke();
  ctx.textAlign = "right";
  ctx.fillText(top.toFixed(top < 10 ? 1 : 0), pad - 6, y(top) + 4);
  ctx.fillText("0", pad - 6, y(0) + 4);
  ctx.fillText(clock(t1), w - 8, h - 4);
  ctx.textAlign = "left";
  ctx.fillText(clock(t0), pad, h - 4);
  ctx.strokeStyle = "#059669";
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(p[0]), y(p[1])) : ctx.moveTo(x(p[0]), y(p[1]))));
  ctx.stroke();
  ctx.fillStyle = "rgba(5,150,105,0.08)";
  ctx.lineTo(x(t1), y(0)); ctx.lineTo(x(t0), y(0)); ctx.closePath(); ctx.fill();
}

function renderQueues(look) {
  const rows = look.queues.map((q) => {
    const tr = el("tr");
    tr.append(el("td", q.queue), el("td", q.ready, "n"), el("td", q.delayed, "n"),
      el("td", q.running, "n"), el("td", q.dead, q.dead ? "n bad" : "n"), el("td", age(q.age), "n"),
      el("td", q.out === null || q.out === undefined ? "–" : q.out.toFixed(q.out < 10 ? 1 : 0), "n"));
    tr.dataset.queue = q.queue;
    return tr;
  });
  fill($("queues").tBodies[0], rows);
  const sum = (k) => look.queues.reduce((a, q) => a + q[k], 0);
  $("total-ready").textContent = sum("ready");
  $("total-running").textContent = sum("running");
  $("total-dead").textContent = sum("dead");
  const select = $("dead-queue");
  const names = look.queues.map((q) => q.queue);
  if (select.options.length !== names.length || names.some((n, i) => select.options[i].value !== n)) {
    const keep = deadQueue;
    select.replaceChildren(...names.map((n) => { const o = el("option", n); o.value = n; return o; }));
    const withDead = look.queues.find((q) => q.dead > 0);
    deadQueue = names.includes(keep) ? keep : (withDead ? withDead.queue : names[0] || null);
    if (deadQueue !== null) select.value = deadQueue;
  }
}

function renderWorkers(look) {
  const note = $("workers-note");
  if (look.workers === null) {
    note.textContent = "This backend keeps no list of workers (see the docs: Observability).";
    note.hidden = false;
    fill($("workers").tBodies[0], []);
    $("total-workers").textContent = "–";
    return;
  }
  note.hidden = look.workers.length > 0;
  note.textContent = "No worker is running.";
  const now = look.time;
  fill($("workers").tBodies[0], look.workers.map((w) => {
    const tr = el("tr");
    const running = el("td");
    if (!w.running.length) running.append(el("span", "idle", "muted"));
    w.running.forEach((t) => running.append(el("div", t.name + " · " + t.id.slice(0, 12) + "… · " + age(now - t.started))));
    tr.append(el("td", w.id), el("td", w.queues.join(", ")), el("td", age(now - w.started), "n"),
      el("td", w.done, "n"), el("td", w.failed, w.failed ? "n bad" : "n"), running);
    return tr;
  }));
  $("total-workers").textContent = look.workers.length;
}

async function refreshDead() {
  if (deadQueue === null) { fill($("dead").tBodies[0], []); return; }
  const letters = await api("api/dead?queue=" + encodeURIComponent(deadQueue));
  fill($("dead").tBodies[0], letters.map((d) => {
    const tr = el("tr");
    const show = el("button", "show");
    show.type = "button";
    show.addEventListener("click", () => showLetter(d.queue, d.task_id));
    const actions = el("td");
    actions.append(show);
    tr.append(el("td", d.task_id, "mono"), el("td", d.task ?? "?"), el("td", d.reason),
      el("td", when(d.failed_at)), el("td", d.error, "error"), actions);
    tr.dataset.id = d.task_id;
    return tr;
  }));
  const q = lastLook && lastLook.queues.find((x) => x.queue === deadQueue);
  const total = q ? q.dead : letters.length;
  $("dead-note").textContent = letters.length < total
    ? "showing the oldest " + letters.length + " of " + total + " (gatorapp dead ls lists them all)"
    : (letters.length ? "" : "no dead letters in this queue");
}

async function showLetter(queue, id) {
  const d = await api("api/dead?queue=" + encodeURIComponent(queue) + "&id=" + encodeURIComponent(id));
  if (d.task_id === undefined) { message(d.error || "no such dead letter", true); return; }
  openLetter = { queue, id };
  $("letter-id").textContent = id;
  const fields = [["queue", d.queue], ["reason", d.reason], ["failed", when(d.failed_at)]];
  if (d.task) {
    fields.push(["task", d.task.name], ["attempts", d.task.attempts],
      ["args", JSON.stringify(d.task.args)], ["kwargs", JSON.stringify(d.task.kwargs)]);
  } else {
    fields.push(["payload", d.size + " bytes, not decodable"]);
  }
  $("letter-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  $("letter-error").textContent = d.error;
  $("letter").hidden = false;
}

async function letterAction(action) {
  if (!openLetter) return;
  if (action === "purge" && !confirm("Delete this dead letter for good?")) return;
  const r = await api("api/dead/" + action, { queue: openLetter.queue, task_id: openLetter.id });
  if (action === "requeue") message(r.requeued ? "requeued " + openLetter.id : "no such dead letter", !r.requeued);
  else message("purged " + r.purged + " dead letter(s)");
  $("letter").hidden = true;
  openLetter = null;
  await tick();
}

async function lookup(event) {
  event.preventDefault();
  const id = $("lookup-id").value.trim();
  if (!id) return;
  const t = await api("api/task?id=" + encodeURIComponent(id));
  const fields = [["task id", t.task_id], ["status", t.status ?? "–"]];
  if (t.note) fields.push(["note", t.note]);
  if (t.task) fields.push(["task", t.task], ["attempts", t.attempts]);
  if (t.finished_at) fields.push(["finished", when(t.finished_at)]);
  if (t.status === "succeeded") fields.push(["result", JSON.stringify(t.value)]);
  else if (t.error) fields.push(["reason", t.reason], ["error", t.error]);
  $("task-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  const tb = $("task-traceback");
  tb.textContent = t.traceback || "";
  tb.hidden = !t.traceback;
  $("task").hidden = false;
}

async function tick() {
  try {
    const look = await api("api/overview");
    lastLook = look;
    renderQueues(look);
    renderWorkers(look);
    drawChart(look.chart);
    const last = look.chart && look.chart.length ? look.chart[look.chart.length - 1][1] : null;
    $("total-rate").textContent = last === null ? "–" : last.toFixed(last < 10 ? 1 : 0);
    await refreshDead();
    $("updated").textContent = "updated " + new Date(look.time * 1000).toLocaleTimeString();
    $("updated").className = "muted";
  } catch (e) {
    $("updated").textContent = "not updated: " + e.message;
    $("updated").className = "bad";
  }
}

$("dead-queue").addEventListener("change", (e) => { deadQueue = e.target.value; refreshDead(); });
$("dead-purge-all").addEventListener("click", async () => {
  if (deadQueue === null || !confirm("Delete every dead letter of " + deadQueue + " for good?")) return;
  const r = await api("api/dead/purge", { queue: deadQueue });
  message("purged " + r.purged + " dead letter(s)");
  await tick();
});
$("letter-requeue").addEventListener("click", () => letterAction("requeue"));
$("letter-purge").addEventListener("click", () => letterAction("purge"));
$("letter-close").addEventListener("click", () => { $("letter").hidden = true; openLetter = null; });
$("lookup").addEventListener("submit", lookup);
tick();
setInterval(tick, 2000);
