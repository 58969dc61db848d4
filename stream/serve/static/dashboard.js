// hebbstream live dashboard: polls the run's JSON endpoints once a second and draws
// plain SVG (no library, nothing fetched from elsewhere).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const W = 800, H = 200, PAD = { left: 48, right: 8, top: 8, bottom: 18 };
let chosen = null;      // the key the user picked; null: follow the top-ranked key
let sourceName = "";

function $(id) { return document.getElementById(id); }

function fmt(n, digits = 0) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "none yet";
  if (seconds < 60) return `${fmt(seconds)} s`;
  if (seconds < 3600) return `${fmt(seconds / 60, 1)} min`;
  return `${fmt(seconds / 3600, 1)} h`;
}

function keyLabel(key) {
  if (key !== "") return key;
  const base = sourceName.split(/[\\/]/).pop();
  return base || "(stream)";
}

function timeLabel(x) {
  // event times are Unix seconds when the stream has a time column, row numbers otherwise
  if (x > 1e8) return new Date(x * 1000).toISOString().replace("T", " ").slice(0, 16);
  return fmt(x);
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

function showSummary(s) {
  sourceName = s.source || "";
  const status = $("status");
  status.textContent = s.ready ? "ready" : s.status;
  status.className = "status " + (s.ready ? "ready" : "not-ready");
  $("throughput").textContent = s.events_per_s === null ? "–" : `${fmt(s.events_per_s)} ev/s`;
  $("events").textContent = fmt(s.events_read);
  let lag = "–";
  if (s.lag) lag = fmt(Object.values(s.lag).reduce((a, b) => a + b, 0)) + " events";
  else if (s.event_time_delay_s !== null) lag = `${fmt(s.event_time_delay_s, 1)} s behind`;
  $("lag").textContent = lag;
  $("dead-letter").textContent = fmt(s.dead_letter);
  $("alerts").textContent = fmt(s.alerts);
  $("checkpoint-age").textContent = age(s.checkpoint_age_s);
  for (const el of document.querySelectorAll(".score-name")) el.textContent = s.score;
  for (const el of document.querySelectorAll(".value-name")) el.textContent = s.value;
}

function showKeys(keys) {
  const list = $("keys");
  list.replaceChildren();
  for (const k of keys) {
    const li = document.createElement("li");
    li.dataset.key = k.key;
    li.title = `${k.events} events, ${k.alerts} alerts`;
    if (k.key === current(keys)) li.classList.add("chosen");
    if (k.score !== null && k.score >= 0.5) li.classList.add("hot");
    const name = document.createElement("span");
    name.className = "key";
    name.textContent = keyLabel(k.key);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = k.score === null ? "–" : fmt(k.score, 3);
    li.append(name, score);
    li.addEventListener("click", () => { chosen = k.key; refresh(); });
    list.append(li);
  }
}

function current(keys) {
  if (chosen !== null && keys.some((k) => k.key === chosen)) return chosen;
  return keys.length ? keys[0].key : null;
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function draw(svg, xs, ys, alerts, markAlerts) {
  svg.replaceChildren();
  const pts = [];
  for (let i = 0; i < xs.length; i++) if (ys[i] !== null) pts.push(i);
  svg.dataset.points = pts.length;
  if (!pts.length) return;
  let lo = Math.min(...pts.map((i) => ys[i])), hi = Math.max(...pts.map((i) => ys[i]));
  if (hi === lo) { lo -= 0.5; hi += 0.5; }
  const x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
  const px = (x) => PAD.left + (x - x0) / (x1 - x0) * (W - PAD.left - PAD.right);
  const py = (y) => PAD.top + (hi - y) / (hi - lo) * (H - PAD.top - PAD.bottom);
  for (const y of [lo, (lo + hi) / 2, hi]) {
    svg.append(el("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: py(y), y2: py(y) }));
    svg.append(el("text", { x: PAD.left - 4, y: py(y) + 4, "text-anchor": "end" }, fmt(y, Math.abs(hi - lo) < 10 ? 2 : 0)));
  }
  svg.append(el("text", { x: PAD.left, y: H - 4 }, timeLabel(x0)));
  svg.append(el("text", { x: W - PAD.right, y: H - 4, "text-anchor": "end" }, timeLabel(xs[xs.length - 1])));
  svg.append(el("polyline", { class: "series", points: pts.map((i) => `${px(xs[i]).toFixed(1)},${py(ys[i]).toFixed(1)}`).join(" ") }));
  for (const i of alerts) {
    svg.append(el("line", { class: "alert-line", x1: px(xs[i]), x2: px(xs[i]), y1: PAD.top, y2: H - PAD.bottom }));
    if (markAlerts && ys[i] !== null) {
      const marker = el("circle", { class: "alert-marker", cx: px(xs[i]), cy: py(ys[i]), r: 4 });
      marker.append(el("title", {}, `alert at ${timeLabel(xs[i])}`));
      svg.append(marker);
    }
  }
}

async function refresh() {
  try {
    const [summary, keys] = await Promise.all([getJSON("/api/summary"), getJSON("/api/keys")]);
    showSummary(summary);
    showKeys(keys);
    const key = current(keys);
    if (key === null) return;
    const series = await getJSON("/api/series?key=" + encodeURIComponent(key));
    $("chosen").textContent = keyLabel(key);
    draw($("value-chart"), series.x, series.value, series.alerts, false);
    draw($("score-chart"), series.x, series.score, series.alerts, true);
    $("range").textContent = series.x.length
      ? `last ${series.x.length} events: ${timeLabel(series.x[0])} – ${timeLabel(series.x[series.x.length - 1])}; `
        + `${series.alerts.length} alert(s) in view` : "";
  } catch (err) {
    const status = $("status");
    status.textContent = "disconnected";
    status.className = "status not-ready";
  }
}

refresh();
setInterval(refresh, 1000);
