// EdgeFleet dashboard: reads the fleet server's JSON API with the operator's token and renders
// plain HTML. Every value that came from a device or an operator goes through esc().
// The render functions are pure (data in, HTML string out) so tests run them under node.
"use strict";

const REFRESH_MS = 5000;
const TOKEN_KEY = "edgefleet.token";
const API = {
  devices: "/api/v1/devices",
  rollouts: "/api/v1/rollouts?limit=20",
  models: "/api/v1/models",
  ingest: "/api/v1/ingest/stats",
  drift: "/api/v1/drift?limit=20",
  report: (id) => `/api/v1/rollouts/${Number(id)}/report`,
};

function esc(value) {
  if (value === null || value === undefined) return "";
  return String(value)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

function ref(r) {
  return r ? `${r.name}@${r.version}` : "";
}

function num(value, digits = 3) {
  return typeof value === "number" && Number.isFinite(value) ? value.toPrecision(digits) : "n/a";
}

function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (Number.isNaN(s)) return "?";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function table(headers, rows) {
  if (!rows.length) return '<p class="muted">none</p>';
  const head = headers.map((h) => `<th>${esc(h)}</th>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function renderSummary(devices, rollouts, ingest) {
  const online = devices.filter((d) => d.online).length;
  const failing = devices.filter((d) => d.phase === "failed" || d.last_error).length;
  const active = rollouts.filter((r) => ["pending", "running", "paused"].includes(r.state));
  const stored = ingest && typeof ingest.stored === "number" ? ingest.stored : "n/a";
  const card = (label, value, cls = "") =>
    `<div class="card ${cls}"><div class="value">${esc(value)}</div><div>${esc(label)}</div></div>`;
  return [
    card("devices", devices.length),
    card("online", online, online < devices.length ? "warn" : "ok"),
    card("offline", devices.length - online, devices.length - online ? "warn" : ""),
    card("with errors", failing, failing ? "bad" : ""),
    card("active rollouts", active.length),
    card("messages stored", stored),
  ].join("");
}

function renderVersions(devices) {
  const counts = new Map();
  for (const d of devices) {
    const key = d.running ? ref(d.running) : "(none)";
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  const total = devices.length || 1;
  const rows = [...counts.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([version, n]) => {
      const pct = (100 * n) / total;
      return (
        `<tr><td>${esc(version)}</td><td class="n">${n}</td>` +
        `<td><meter min="0" max="100" value="${pct.toFixed(1)}">${pct.toFixed(0)} %</meter></td></tr>`
      );
    });
  return table(["running", "devices", ""], rows);
}

function gateCell(gate) {
  const cls = { pass: "ok", fail: "bad", wait: "warn" }[gate.status] || "muted";
  const value = gate.value === null || gate.value === undefined ? "n/a" : num(gate.value);
  const title = `${gate.name}: ${value} vs ${gate.threshold} (n=${gate.samples}/${gate.min_samples}) ${gate.detail || ""}`;
  return `<span class="gate ${cls}" title="${esc(title)}">${esc(gate.name)} ${esc(value)}</span>`;
}

function renderRollouts(rollouts) {
  const rows = rollouts.map((r) => {
    const counts = Object.entries(r.counts || {})
      .map(([k, v]) => `${esc(k)} ${esc(v)}`)
      .join(", ");
    const gates = ((r.last_evaluation && r.last_evaluation.gates) || []).map(gateCell).join(" ");
    return (
      `<tr data-rollout="${esc(r.id)}"><td class="n">${esc(r.id)}</td><td>${esc(r.name)}</td>` +
      `<td>${esc(r.model)}@${esc(r.version)}</td><td class="state ${esc(r.state)}">${esc(r.state)}</td>` +
      `<td>${esc(r.stage_name)} (${esc(r.stage + 1)}/${esc((r.stages || []).length)})</td>` +
      `<td>${counts}</td><td>${gates}</td><td>${esc(r.reason || "")}</td></tr>`
    );
  });
  return table(["id", "name", "version", "state", "stage", "devices", "gates (last)", "reason"], rows);
}

function renderReport(report) {
  const r = report.rollout;
  const decisions = (report.decisions || []).map((d) => {
    const gates = ((d.evidence && d.evidence.gates) || []).map(gateCell).join(" ");
    return (
      `<tr><td>${esc(d.ts)}</td><td>${esc(d.stage)}</td><td>${esc(d.action)}</td>` +
      `<td>${esc(d.actor)}</td><td>${esc(d.reason)}</td><td>${gates}</td></tr>`
    );
  });
  const diff = report.differential || {};
  const side = (x) => (x ? `p50 ${num(x.p50)} / p95 ${num(x.p95)}` : "n/a");
  const diffRows = Object.entries(diff.latency_by_class || {}).map(
    ([cls, v]) =>
      `<tr><td>${esc(cls)}</td><td>${esc(side(v.new))}</td><td>${esc(side(v.old))}</td>` +
      `<td class="n">${esc(num(v.p95_ratio))}</td></tr>`
  );
  const summary =
    `<p>baseline: ${esc(diff.baseline)}; error rate change: ${esc(num(diff.error_rate_increase))}; ` +
    `confidence distance (TV): ${esc(num(diff.confidence_tv_distance))}</p>`;
  return (
    `<h3>Rollout ${esc(r.id)}: ${esc(r.name)} → ${esc(r.model)}@${esc(r.version)} (${esc(r.state)})</h3>` +
    `<h4>Decisions</h4>` +
    table(["time", "stage", "action", "actor", "reason", "gates"], decisions) +
    `<h4>New vs old, by device class (latency, ms)</h4>` +
    summary +
    table(["class", "new", "old", "p95 new/old"], diffRows)
  );
}

function renderDrift(report) {
  const statuses = (report && report.statuses) || [];
  const alerts = (report && report.alerts) || [];
  const cls = { drift: "bad", ok: "ok", insufficient: "muted" };
  const rows = statuses.map(
    (s) =>
      `<tr><td>${esc(s.model)}@${esc(s.version)}</td><td>${esc(s.detector)}</td>` +
      `<td class="${cls[s.status] || ""}">${esc(s.status)}</td><td class="n">${esc(num(s.value))}</td>` +
      `<td class="n">${esc(s.threshold)}</td><td class="n">${esc(s.samples)} / ${esc(s.reference_samples)}</td>` +
      `<td>${esc(s.detail)}</td></tr>`
  );
  const alertRows = alerts.map(
    (a) =>
      `<tr><td class="n">${esc(a.id)}</td><td>${esc(a.model)}@${esc(a.version)}</td><td>${esc(a.detector)}</td>` +
      `<td>${esc(a.opened_at)}</td><td>${a.closed_at ? esc(a.closed_at) : '<span class="bad">open</span>'}</td>` +
      `<td>${esc(a.trigger_status)} ${esc(a.trigger_detail)}</td></tr>`
  );
  return (
    table(["version", "detector", "status", "value", "threshold", "samples / reference", "detail"], rows) +
    "<h4>Alerts</h4>" +
    table(["id", "version", "detector", "opened", "closed", "retraining"], alertRows)
  );
}

function matches(device, needle) {
  if (!needle) return true;
  const hay = [
    device.device_id,
    device.device_class,
    device.phase,
    ref(device.running),
    ...(device.tags || []),
  ]
    .join(" ")
    .toLowerCase();
  return hay.includes(needle.toLowerCase());
}

function renderDevices(devices, needle = "", now = Date.now()) {
  const rows = devices
    .filter((d) => matches(d, needle))
    .slice(0, 500)
    .map((d) => {
      const t = d.last_telemetry || {};
      const lat = t.latency_ms ? num(t.latency_ms.p95) : "";
      const desired = d.desired && ref(d.desired) !== ref(d.running) ? ` → ${ref(d.desired)}` : "";
      return (
        `<tr><td>${esc(d.device_id)}</td><td class="${d.online ? "ok" : "bad"}">${d.online ? "online" : "offline"}</td>` +
        `<td>${esc(d.device_class)}</td><td>${esc((d.tags || []).join(", "))}</td>` +
        `<td>${esc(ref(d.running))}${esc(desired)}${d.pinned ? " (pinned)" : ""}</td>` +
        `<td>${esc(d.phase)}</td><td class="n">${esc(lat)}</td><td>${esc(ago(d.last_seen, now))}</td>` +
        `<td class="err">${esc((d.last_error || "").slice(0, 200))}</td></tr>`
      );
    });
  const more = devices.filter((d) => matches(d, needle)).length > 500 ? '<p class="muted">first 500 shown</p>' : "";
  return table(["device", "status", "class", "tags", "model", "phase", "p95 ms", "last seen", "last error"], rows) + more;
}

// -- browser wiring (not run under node) ------------------------------------------------------
async function fetchJson(path, token) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) {
      /* not JSON */
    }
    const err = new Error(`${response.status}: ${detail}`);
    err.status = response.status;
    throw err;
  }
  return response.json();
}

function boot() {
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let selected = null;
  let devices = [];

  async function refresh() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return;
    try {
      const [devs, rollouts, ingest, drift] = await Promise.all([
        fetchJson(API.devices, token),
        fetchJson(API.rollouts, token),
        fetchJson(API.ingest, token).catch(() => null),
        fetchJson(API.drift, token).catch(() => null),
      ]);
      devices = devs;
      $("summary").innerHTML = renderSummary(devs, rollouts, ingest);
      $("versions").innerHTML = renderVersions(devs);
      $("drift").innerHTML = renderDrift(drift);
      $("rollouts").innerHTML = renderRollouts(rollouts);
      $("devices").innerHTML = renderDevices(devs, $("filter").value);
      if (selected !== null) $("rollout-detail").innerHTML = renderReport(await fetchJson(API.report(selected), token));
      $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
      $("status").className = "muted";
    } catch (err) {
      $("status").textContent = `error: ${err.message}`;
      $("status").className = "bad";
      if (err.status === 401) signOut();
    }
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(timer);
    $("logout").hidden = true;
    $("token").hidden = false;
    $("signin").hidden = false;
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    start();
  });
  $("logout").addEventListener("click", () => {
    signOut();
    $("status").textContent = "signed out";
  });
  $("filter").addEventListener("input", () => {
    $("devices").innerHTML = renderDevices(devices, $("filter").value);
  });
  $("rollouts").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-rollout]");
    if (!row) return;
    selected = Number(row.dataset.rollout);
    refresh();
  });

  function start() {
    $("logout").hidden = false;
    $("token").hidden = true;
    $("signin").hidden = true;
    clearInterval(timer);
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  }

  if (sessionStorage.getItem(TOKEN_KEY)) start();
}

if (typeof module !== "undefined" && module.exports) {
  module.exports = { esc, ago, num, renderSummary, renderVersions, renderRollouts, renderReport, renderDevices, renderDrift, API };
} else {
  document.addEventListener("DOMContentLoaded", boot);
}
