// The Tollgate dashboard: reads the admin API with the admin token and
// redraws every few seconds. No framework and no build step; charts are
// plain SVG. Everything shown is set with textContent, never as HTML:
// rate-limit keys and account names come from clients.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const params = new URLSearchParams(location.search);
const INTERVAL = Math.max(250, Number(params.get("interval")) || 2000);
const HISTORY = 60; // samples kept per route for the sparkline
const seen = new Map(); // route -> [{t, total}]

function token() {
  const m = /^#token=(.+)$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("tollgate-token", decodeURIComponent(m[1]));
    window.history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("tollgate-token");
}

async function api(path) {
  const res = await fetch("/api/v1/" + path, {
    headers: { authorization: "Bearer " + token() },
    cache: "no-store",
  });
  if (res.status === 401 || res.status === 403 || res.status === 429) {
    const body = await res.json().catch(() => ({}));
    const err = new Error(body.detail || res.statusText);
    err.auth = true;
    throw err;
  }
  if (!res.ok) throw new Error(path + ": " + res.status);
  return res.json();
}

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function field(name, value) {
  return el("td", value, { "data-field": name });
}

function fixed(n, digits) {
  return n === null || n === undefined ? "–" : Number(n).toFixed(digits);
}

function sparkline(samples) {
  const w = 120, h = 24;
  const s = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img" });
  if (samples.length < 2) return s;
  const max = Math.max(1, ...samples);
  const step = w / (HISTORY - 1);
  const x0 = w - step * (samples.length - 1);
  const pts = samples.map((v, i) => `${(x0 + i * step).toFixed(1)},${(h - 1 - (v / max) * (h - 2)).toFixed(1)}`);
  s.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: "#3b6fb6", "stroke-width": 1.5 }));
  return s;
}

function statusMix(r) {
  const w = 140, h = 14;
  const s = svg("svg", { width: w, height: h, role: "img" });
  const parts = [
    [r.ok, "var(--ok)", "2xx/3xx"],
    [r.clientError, "var(--c4)", "4xx"],
    [r.rateLimited, "var(--c429)", "429"],
    [r.serverError, "var(--c5)", "5xx"],
  ];
  const total = parts.reduce((a, [n]) => a + n, 0);
  if (!total) {
    s.append(svg("rect", { x: 0, y: 0, width: w, height: h, fill: "#eef1f4" }));
    return s;
  }
  let x = 0;
  for (const [n, color, label] of parts) {
    if (!n) continue;
    const width = (n / total) * w;
    const rect = svg("rect", { x: x.toFixed(2), y: 0, width: width.toFixed(2), height: h, fill: color });
    const title = svg("title", {});
    title.textContent = `${label}: ${n}`;
    rect.append(title);
    s.append(rect);
    x += width;
  }
  return s;
}

function bar(value, max) {
  const w = 160, h = 10;
  const s = svg("svg", { width: w, height: h, role: "img" });
  s.append(svg("rect", { x: 0, y: 0, width: max ? ((value / max) * w).toFixed(2) : 0, height: h, fill: "#3b6fb6" }));
  return s;
}

function rate(name, total, now) {
  const h = seen.get(name) || [];
  h.push({ t: now, total });
  while (h.length > HISTORY + 1) h.shift();
  seen.set(name, h);
  const rates = [];
  for (let i = 1; i < h.length; i++) {
    const dt = (h[i].t - h[i - 1].t) / 1000;
    rates.push(dt > 0 ? Math.max(0, h[i].total - h[i - 1].total) / dt : 0);
  }
  return rates;
}

function drawRoutes(routes, now) {
  const body = document.querySelector("#routes tbody");
  const rows = [];
  const comps = [];
  for (const r of routes) {
    const q = r.requests;
    const rates = rate(r.name, q.total, now);
    const peak = rates.length ? Math.max(...rates) : 0;
    const tr = el("tr", null, { "data-route": r.name, "data-rps-max": peak.toFixed(1) });
    tr.append(
      el("td", r.name),
      field("rps", rates.length ? fixed(rates[rates.length - 1], 1) : "–"),
      el("td"),
      field("total", q.total),
      field("ok", q.ok),
      field("clientError", q.clientError),
      field("rateLimited", q.rateLimited),
      field("serverError", q.serverError),
      el("td"),
      field("p50", r.latencyMs ? fixed(r.latencyMs.p50, 2) : "–"),
      field("p99", r.latencyMs ? fixed(r.latencyMs.p99, 2) : "–"),
    );
    tr.children[2].append(sparkline(rates));
    tr.children[8].append(statusMix(q));
    rows.push(tr);
    for (const c of r.components) comps.push([r.name, c]);
  }
  body.replaceChildren(...rows);

  const cbody = document.querySelector("#components tbody");
  const max = Math.max(0, ...comps.map(([, c]) => c.meanMs));
  cbody.replaceChildren(...comps.map(([route, c]) => {
    const tr = el("tr", null, { "data-route": route, "data-component": c.name });
    tr.append(el("td", route), el("td", c.name), field("meanMs", fixed(c.meanMs, 3)), field("calls", c.calls), el("td"));
    tr.children[4].append(bar(c.meanMs, max));
    return tr;
  }));
}

function drawLimits(page) {
  const body = document.querySelector("#limits tbody");
  body.replaceChildren(...page.data.map((l) => {
    const tr = el("tr", null, { "data-policy": l.policy, "data-key": l.key });
    const key = el("td", l.key, { class: "key", title: l.key });
    tr.append(el("td", l.policy), key, field("remaining", l.remaining), field("limit", l.limit),
      field("resetSeconds", l.resetSeconds), el("td"));
    if (l.limited) tr.children[5].append(el("span", "limited", { class: "tag limited" }));
    return tr;
  }));
  document.getElementById("limits-empty").hidden = page.data.length > 0;
}

function drawLockouts(page) {
  const body = document.querySelector("#lockouts tbody");
  body.replaceChildren(...page.data.map((l) => {
    const tr = el("tr", null, { "data-account": l.account });
    tr.append(el("td", l.account), field("failures", l.failures), field("threshold", l.threshold),
      field("retryAfterSeconds", l.locked ? l.retryAfterSeconds : "–"), el("td"));
    tr.children[4].append(el("span", l.locked ? "locked" : "counting", { class: "tag " + (l.locked ? "locked" : "ok") }));
    return tr;
  }));
  document.getElementById("lockouts-empty").hidden = page.data.length > 0;
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
}

function drawStatus(s) {
  const set = (name, v) => { document.querySelector(`#status [data-field="${name}"]`).textContent = v; };
  set("configVersion", s.configVersion);
  set("loadedAt", s.loadedAt);
  set("uptime", duration(s.uptimeSeconds));
  const r = s.lastReload;
  set("lastReload", r ? `${r.at} (${r.ok ? "ok" : "refused: " + r.errors.join("; ")})` : "none");
  set("updated", new Date().toISOString().slice(11, 19) + "Z");
}

async function refresh() {
  try {
    const [status, routes, limits, lockouts] = await Promise.all([
      api("status"),
      api("routes?limit=100"),
      api("limits?limit=10&sortBy=remaining&sortOrder=asc"),
      api("lockouts?limit=10&sortBy=failures&sortOrder=desc"),
    ]);
    const now = Date.now();
    drawStatus(status);
    drawRoutes(routes.data, now);
    drawLimits(limits);
    drawLockouts(lockouts);
    document.getElementById("board").hidden = false;
    document.getElementById("login").hidden = true;
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  } catch (e) {
    if (e.auth) {
      sessionStorage.removeItem("tollgate-token");
      showLogin(e.message);
      return false;
    }
    document.querySelector('#status [data-field="updated"]').textContent = "error: " + e.message;
  }
  return true;
}

function showLogin(message) {
  document.getElementById("board").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

let timer = null;
async function loop() {
  clearTimeout(timer);
  if (await refresh()) timer = setTimeout(loop, INTERVAL);
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("tollgate-token", document.getElementById("token").value);
  loop();
});

if (token()) loop(); else showLogin("");
