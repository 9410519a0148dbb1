// The four views (fleet, device, model, rollout) as pure functions: data in, HTML out.
// ctx = {role, now}: buttons and forms are drawn only for a role that may use them (the server
// checks again), so a viewer sees none that would fail.
import { esc, ref, num, pct, ago, when, table, link, button } from "./fmt.mjs";
import { lineChart, histogramChart, gateChart, stageChart } from "./charts.mjs";

const RANK = { viewer: 0, operator: 1, admin: 2 };
export const can = (ctx, needed) => (RANK[ctx && ctx.role] ?? -1) >= RANK[needed];
// No rollout state name is spelled here: the server sets finished_at exactly when a rollout
// ends, and each rollout carries the operator actions its state allows (services/rollouts/
// state.py's table), so the console offers what the server would accept.

function gateCell(gate) {
  const cls = { pass: "ok", fail: "bad", wait: "warn", insufficient: "warn" }[gate.status] || "muted";
  const value = gate.value === null || gate.value === undefined ? "n/a" : num(gate.value);
  const on = gate.evidence ? ` on ${gate.evidence} evidence` : "";
  const title = `${gate.name}: ${value} vs ${gate.threshold} (n=${gate.samples}/${gate.min_samples})${on} ${gate.detail || ""}`;
  return `<span class="gate ${cls}" title="${esc(title)}">${esc(gate.name)} ${esc(value)}</span>`;
}

// "digits 1.0.0 → 2.0.0" (or "digits@1.0.0 (3), none (1) → digits@2.0.0" across models).
export function fromTo(r) {
  const before = Object.entries(r.from_versions || {}).filter(([, n]) => n > 0);
  const names = new Set(before.map(([v]) => v.split("@")[0]));
  if (!before.length) return `${r.model} ${r.version}`;
  if (names.size === 1 && names.has(r.model)) {
    const olds = before.map(([v, n]) => (before.length > 1 ? `${v.split("@")[1]} (${n})` : v.split("@")[1]));
    return `${r.model} ${olds.join(", ")} → ${r.version}`;
  }
  const olds = before.map(([v, n]) => `${v || "none"}${before.length > 1 ? ` (${n})` : ""}`);
  return `${olds.join(", ")} → ${r.model}@${r.version}`;
}

function rolloutName(r) {
  return r.name && r.name !== `${r.model}@${r.version}` ? r.name : "";
}

function summaryCards(devices, rollouts, ingest) {
  const online = devices.filter((d) => d.online).length;
  const failing = devices.filter((d) => d.phase === "failed" || d.last_error).length;
  const active = rollouts.filter((r) => !r.finished_at);
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

export function renderRollouts(rollouts) {
  const rows = rollouts.map((r) => {
    const counts = Object.entries(r.counts || {})
      .filter(([, v]) => v)
      .map(([k, v]) => `${esc(k)} ${esc(v)}`)
      .join(", ");
    const gates = ((r.last_evaluation && r.last_evaluation.gates) || []).map(gateCell).join(" ");
    return (
      `<tr data-rollout="${esc(r.id)}"><td class="n">${link(r.id, "rollout", r.id)}</td>` +
      `<td>${esc(fromTo(r))}${rolloutName(r) ? ` <span class="muted">${esc(rolloutName(r))}</span>` : ""}</td>` +
      `<td class="state ${esc(r.state)}">${esc(r.state)}</td>` +
      `<td>${esc(r.stage_name)} (${esc(r.stage + 1)}/${esc((r.stages || []).length)})</td>` +
      `<td>${counts}</td><td>${gates}</td><td>${when(r.created_at)}</td><td>${esc(r.reason || "")}</td></tr>`
    );
  });
  return table(["id", "rollout", "state", "stage", "devices", "gates (last)", "created", "reason"], rows);
}

// Every registered version, with the devices running it and the devices told to run it.
export function renderVersions(devices, models) {
  const rows = new Map();
  const row = (key) => rows.get(key) || rows.set(key, { running: 0, desired: 0, registered: false }).get(key);
  for (const m of models || []) row(`${m.name}@${m.version}`).registered = true;
  for (const d of devices) {
    row(d.running ? ref(d.running) : "(none)").running += 1;
    if (d.desired) row(ref(d.desired)).desired += 1;
  }
  const total = devices.length || 1;
  const html = [...rows.entries()]
    .sort((a, b) => b[1].running - a[1].running || b[1].desired - a[1].desired || a[0].localeCompare(b[0]))
    .map(([version, v]) => {
      const share = (100 * v.running) / total;
      const [name, ver] = version.split("@");
      const label = v.registered ? link(version, "model", name, ver) : esc(version);
      return (
        `<tr><td>${label}</td><td class="n">${v.running}</td><td class="n">${v.desired}</td>` +
        `<td><meter min="0" max="100" value="${share.toFixed(1)}">${share.toFixed(0)} %</meter></td></tr>`
      );
    });
  return table(["version", "running", "desired", "share running"], html);
}

// Verdicts that judge something first; "insufficient" ones are counted, not listed.
export function renderDrift(report) {
  const statuses = (report && report.statuses) || [];
  const alerts = (report && report.alerts) || [];
  const cls = { drift: "bad", ok: "ok" };
  const judged = statuses.filter((s) => s.status !== "insufficient");
  const waiting = statuses.length - judged.length;
  const rows = judged.map(
    (s) =>
      `<tr><td>${esc(s.model)}@${esc(s.version)}</td><td>${esc(s.detector)}</td>` +
      `<td class="${cls[s.status] || ""}">${esc(s.status)}</td><td class="n">${esc(num(s.value))}</td>` +
      `<td class="n">${esc(s.threshold)}</td><td class="n">${esc(s.samples)} / ${esc(s.reference_samples)}</td>` +
      `<td>${esc(s.detail)}</td></tr>`
  );
  const alertRows = alerts.map(
    (a) =>
      `<tr><td class="n">${esc(a.id)}</td><td>${esc(a.model)}@${esc(a.version)}</td><td>${esc(a.detector)}</td>` +
      `<td>${when(a.opened_at)}</td><td>${a.closed_at ? when(a.closed_at) : '<span class="bad">open</span>'}</td>` +
      `<td>${esc(a.trigger_status)} ${esc(a.trigger_detail)}</td></tr>`
  );
  const note = waiting ? `<p class="muted">${waiting} detector(s) still collecting data (insufficient) not listed</p>` : "";
  return (
    table(["version", "detector", "status", "value", "threshold", "samples / reference", "detail"], rows) +
    note +
    (alerts.length ? "<h4>Alerts</h4>" + table(["id", "version", "detector", "opened", "closed", "retraining"], alertRows) : "")
  );
}

function matches(device, needle) {
  if (!needle) return true;
  const hay = [device.device_id, device.device_class, device.phase, ref(device.running), ref(device.desired), ...(device.tags || [])]
    .join(" ")
    .toLowerCase();
  return hay.includes(needle.toLowerCase());
}

export function renderDevices(devices, needle = "", now = Date.now()) {
  const found = devices.filter((d) => matches(d, needle));
  const rows = found.slice(0, 500).map((d) => {
    const t = d.last_telemetry || {};
    const lat = t.latency_ms ? num(t.latency_ms.p95) : "";
    const desired = d.desired ? ref(d.desired) : "";
    const behind = desired && desired !== ref(d.running) ? "warn" : "";
    return (
      `<tr><td>${link(d.device_id, "device", d.device_id)}</td><td class="${d.online ? "ok" : "bad"}">${d.online ? "online" : "offline"}</td>` +
      `<td>${esc(d.device_class)}</td><td>${esc((d.tags || []).join(", "))}</td>` +
      `<td>${esc(ref(d.running))}</td><td class="${behind}">${esc(desired)}${d.pinned ? " (pinned)" : ""}</td>` +
      `<td>${esc(d.phase)}</td><td class="n">${esc(lat)}</td><td title="${esc(d.last_seen || "")}">${esc(ago(d.last_seen, now))}</td>` +
      `<td class="err">${esc((d.last_error || "").slice(0, 200))}</td></tr>`
    );
  });
  const more = found.length > 500 ? `<p class="muted">first 500 of ${found.length} shown</p>` : "";
  return table(["device", "status", "class", "tags", "running", "desired", "phase", "p95 ms", "last seen", "last error"], rows) + more;
}

export function renderEnrollment(tokens, ctx) {
  const rows = (tokens || []).map(
    (t) =>
      `<tr><td class="n">${esc(t.id)}</td><td>${esc(t.state)}</td><td class="n">${esc(t.uses_left)}/${esc(t.uses)}</td>` +
      `<td>${esc(t.device_class)}</td><td>${esc((t.tags || []).join(", "))}</td><td>${when(t.expires_at)}</td>` +
      `<td>${can(ctx, "operator") && t.state === "active" ? button("revoke", "enroll-revoke", { id: t.id }, true) : ""}</td></tr>`
  );
  return table(["id", "state", "uses left", "class", "tags", "expires", ""], rows);
}

// Retraining pipeline runs (server-driven or reported by an external engine), steps in order.
export function renderPipelines(runs) {
  const cls = { succeeded: "ok", failed: "bad", cancelled: "muted" };
  const rows = (runs || []).map((r) => {
    const steps = (r.steps || [])
      .map((s) => `${esc(s.name)}${s.attempt > 1 ? ` (try ${esc(s.attempt)})` : ""}: ${esc(s.state)}`)
      .join(" → ");
    const last = (r.steps || []).slice(-1)[0];
    return (
      `<tr><td class="n">${esc(r.id)}</td><td>${esc(r.model_name)}</td><td>${esc(r.source)}</td>` +
      `<td class="${cls[r.state] || ""}">${esc(r.state)}</td><td>${esc(r.parent_version)} → ${esc(r.candidate_version)}</td>` +
      `<td>${steps}</td><td>${esc(last ? last.detail : "")}</td><td class="err">${esc(r.error)}</td></tr>`
    );
  });
  return table(["run", "model", "source", "state", "parent → candidate", "steps", "last step", "error"], rows);
}

export function renderFleet(data, ctx) {
  return {
    summary: summaryCards(data.devices, data.rollouts, data.ingest),
    rollouts: renderRollouts(data.rollouts),
    versions: renderVersions(data.devices, data.models),
    drift: renderDrift(data.drift),
    pipelines: renderPipelines(data.pipelines),
    enrollment: renderEnrollment(data.enrollment, ctx),
  };
}

// -- device -------------------------------------------------------------------------------------
export function renderDevice({ device, telemetry, events }, ctx) {
  const d = device;
  const committed = (events || []).filter((e) => e.event === "committed" && e.model);
  const previous = committed.map((e) => ref(e.model)).find((v) => v && v !== ref(d.running));
  const facts = [
    ["status", d.online ? "online" : "offline"],
    ["class", d.device_class],
    ["tags", (d.tags || []).join(", ")],
    ["running", ref(d.running)],
    ["desired", ref(d.desired)],
    ["previous", previous || ""],
    ["pinned", ref(d.pinned)],
    ["phase", d.phase],
    ["agent", d.agent_version],
    ["last error", d.last_error],
  ];
  const list = facts.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join("");
  const seen = `<tr><th>last seen</th><td>${when(d.last_seen)}</td></tr>`;
  const rows = [...(telemetry || [])].reverse();
  const latency = lineChart({
    title: "latency p95 (ms) per telemetry interval",
    series: [{ name: d.device_id, points: rows.map((t) => ({ t: t.received_at, v: t.latency_ms ? t.latency_ms.p95 : null })) }],
  });
  const errors = lineChart({
    title: "errors per interval",
    series: [{ name: d.device_id, points: rows.map((t) => ({ t: t.received_at, v: t.error_count })) }],
  });
  const eventRows = (events || []).map(
    (e) =>
      `<tr><td>${when(e.ts)}</td><td>${esc(e.event)}</td><td>${esc(ref(e.model))}</td>` +
      `<td class="n">${e.progress === null || e.progress === undefined ? "" : esc(pct(e.progress))}</td><td>${esc(e.detail)}</td></tr>`
  );
  let actions = "";
  if (can(ctx, "operator")) {
    actions =
      `<form class="inline" data-form="pin" data-device="${esc(d.device_id)}">` +
      `<input name="model" placeholder="model" required maxlength="63" value="${esc((d.running || d.desired || d.pinned || {}).name || "")}">` +
      `<input name="version" placeholder="version" required maxlength="63"><button type="submit">pin</button></form>` +
      (d.pinned ? button("unpin", "unpin", { device: d.device_id }, true) : "") +
      `<form class="inline" data-form="tags" data-device="${esc(d.device_id)}">` +
      `<input name="add" placeholder="add tags (comma)" maxlength="500"><input name="remove" placeholder="remove tags" maxlength="500">` +
      `<button type="submit">tag</button></form>`;
  }
  return (
    `<h2>Device ${esc(d.device_id)}</h2><div class="actions">${actions}</div>` +
    `<table class="facts">${list}${seen}</table>` +
    `<div class="charts">${latency}${errors}</div>` +
    `<h3>Events</h3>${table(["time", "event", "model", "progress", "detail"], eventRows)}`
  );
}

// -- model --------------------------------------------------------------------------------------
export function latencySeries(chart, field) {
  return ((chart && chart.series) || []).map((s) => ({
    name: `${chart.model}@${s.version}`,
    points: s.points.map((p) => ({ t: p.t, v: p[field] })),
  }));
}

export function renderModel({ model, lineage, versions, chart, quality, samples, capture }, ctx) {
  const m = model;
  const facts = [
    ["format", m.format], ["precision", m.precision], ["task", m.task], ["sha256", m.sha256],
    ["signature", m.signature_status || (m.signed ? "signed" : "unsigned")], ["parent", m.parent_version],
    ["dataset", m.dataset_sha256], ["training ref", m.training_ref],
  ].map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join("");
  const others = (versions || []).filter((v) => v.name === m.name).map(
    (v) => `<tr><td>${link(v.version, "model", v.name, v.version)}</td><td>${when(v.created_at)}</td><td>${esc(v.parent_version)}</td></tr>`
  );
  const lineageRows = ((lineage && lineage.chain) || []).map(
    (e) => `<tr><td>${esc(e.version)}</td><td>${esc(e.parent_version)}</td><td>${esc((e.dataset_sha256 || "").slice(0, 12))}</td><td>${esc(e.training_ref)}</td></tr>`
  );
  const subsets = (quality && quality.subsets) || {};
  const accRows = ["random", "all"].filter((k) => subsets[k]).map((k) => {
    const o = subsets[k].overall || {};
    return `<tr><td>${esc(subsets[k].description || k)}</td><td class="n">${esc(num(o.accuracy ?? o.map50))}</td><td class="n">${esc(o.labelled ?? o.samples ?? 0)}</td></tr>`;
  });
  const acc = `<h3>Quality on labelled samples</h3>${table(["subset", quality ? quality.metric || "accuracy" : "accuracy", "labelled"], accRows)}`;
  const sampleRows = ((samples && samples.items) || []).map((s) => {
    const label = s.label || "";
    const form = can(ctx, "operator")
      ? `<form class="inline" data-form="label" data-sample="${esc(s.id)}"><input name="label" placeholder="class" maxlength="100" value="${esc(label)}"><button type="submit">label</button></form>`
      : esc(label);
    return `<tr><td class="n">${esc(s.id)}</td><td>${when(s.captured_at)}</td><td>${esc(s.device_id)}</td><td>${esc(s.version)}</td><td>${esc(s.reason)}</td><td>${esc(s.predicted)}</td><td>${form}</td></tr>`;
  });
  let policy = `<pre>${esc(JSON.stringify((capture && capture.policy) || capture || null, null, 1))}</pre>`;
  if (can(ctx, "operator")) {
    const p = (capture && capture.policy) || {};
    policy +=
      `<form class="inline" data-form="capture" data-model="${esc(m.name)}" data-version="${esc(m.version)}">` +
      `<label>random <input name="random" type="number" min="0" max="1" step="0.001" value="${esc(p.random ?? 0)}"></label>` +
      `<label>low confidence below <input name="low_confidence" type="number" min="0" max="1" step="0.01" value="${esc(p.low_confidence ?? "")}"></label>` +
      `<label>per hour <input name="max_per_hour" type="number" min="0" value="${esc(p.max_per_hour ?? 60)}"></label>` +
      `<button type="submit">set capture policy</button></form>`;
  }
  const create = can(ctx, "operator") ? rolloutForm(m) : "";
  return (
    `<h2>Model ${esc(m.name)}@${esc(m.version)}</h2><table class="facts">${facts}</table>` +
    `<div class="charts">` +
    lineChart({ title: `${m.name}: latency p95 (ms, mean of the devices' intervals) per version`, series: latencySeries(chart, "p95_mean") }) +
    lineChart({ title: `${m.name}: error rate per version`, series: latencySeries(chart, "error_rate"), format: (v) => pct(v) }) +
    `</div>${acc}<h3>Versions</h3>${table(["version", "created", "parent"], others)}` +
    `<h3>Lineage</h3>${table(["version", "parent", "dataset", "training ref"], lineageRows)}` +
    `<h3>Capture policy</h3>${policy}<h3>Samples (newest)</h3>` +
    table(["id", "captured", "device", "version", "reason", "predicted", "label"], sampleRows) + create
  );
}

export function rolloutForm(m) {
  return (
    `<h3>New rollout of ${esc(m.name)}@${esc(m.version)}</h3>` +
    `<form class="grid" data-form="rollout" data-model="${esc(m.name)}" data-version="${esc(m.version)}">` +
    `<label>tags (all of) <input name="tags" maxlength="500" placeholder="lab, line-3"></label>` +
    `<label>device classes (any of) <input name="device_classes" maxlength="500"></label>` +
    `<label>device ids <input name="device_ids" maxlength="20000"></label>` +
    `<label>canary % <input name="canary_percent" type="number" min="0.1" max="100" step="0.1" value="10"></label>` +
    `<label>batches % <input name="batches" value="50, 100" maxlength="200"></label>` +
    `<label>soak s <input name="soak_s" type="number" min="0" value="600"></label>` +
    `<label>p95 ratio at most <input name="max_ratio" type="number" min="0.01" step="0.01" value="1.5"></label>` +
    `<label>error rate increase at most <input name="max_increase" type="number" min="0" max="1" step="0.001" value="0.01"></label>` +
    `<label><input name="require_approval" type="checkbox"> approve each stage</label>` +
    `<button type="submit">start rollout</button></form>`
  );
}

// -- rollout ------------------------------------------------------------------------------------
// The latest stored comparison of the candidate (edgefleet fleet models compare): differential
// and benchmark figures on the same inputs, before any device served it.
export function renderComparison(list) {
  const c = list && list.latest;
  if (!c) return '<p class="muted">no comparison stored (edgefleet fleet models compare)</p>';
  const r = c.result || {};
  const lab = r.labelled;
  const lat = r.latency || {};
  const delta = lab ? `${(100 * lab.accuracy_delta).toFixed(1)} pt` : "no labels";
  const row =
    `<tr><td>${esc(c.baseline_version)} → ${esc(c.candidate_version)}</td><td>${esc(r.task)}</td>` +
    `<td class="n">${esc(r.samples)}</td><td class="n">${esc(pct(r.agreement))}</td>` +
    `<td class="n">${esc(delta)}</td><td class="n">${esc(num(lat.ratio))}</td>` +
    `<td>${esc(lat.host)} (${esc(lat.arch)})</td><td>${when(c.created_at)}</td></tr>`;
  return table(["versions", "task", "inputs", "agreement", "accuracy Δ", "latency ×", "measured on", "when"], [row]);
}

export function renderRollout({ report, chart, compared }, ctx) {
  const r = report.rollout;
  const diff = report.differential || {};
  const decisions = (report.decisions || []).map((d) => {
    const gates = ((d.evidence && d.evidence.gates) || []).map(gateCell).join(" ");
    return `<tr><td>${when(d.ts)}</td><td>${esc(d.stage)}</td><td>${esc(d.action)}</td><td>${esc(d.actor)}</td><td>${esc(d.reason)}</td><td>${gates}</td></tr>`;
  });
  const side = (x) => (x ? `p50 ${num(x.p50)} / p95 ${num(x.p95)}` : "n/a");
  const diffRows = Object.entries(diff.latency_by_class || {}).map(
    ([cls, v]) => `<tr><td>${esc(cls)}</td><td>${esc(side(v.new))}</td><td>${esc(side(v.old))}</td><td class="n">${esc(num(v.p95_ratio))}</td></tr>`
  );
  const acc = diff.label_accuracy || {};
  const accRow = (name) => {
    const a = acc[name] || {};
    const all = a.all || {};
    return `<tr><td>${esc(name)}</td><td>${esc((a.versions || []).join(", "))}</td><td class="n">${esc(num(all.accuracy))}</td><td class="n">${esc(all.labelled ?? 0)}</td></tr>`;
  };
  let actions = "";
  if (can(ctx, "operator")) {
    const labels = { pause: "pause", resume: "resume", approve: "approve next stage", abort: "abort" };
    for (const verb of r.actions || []) {
      if (labels[verb]) actions += button(labels[verb], "rollout", { verb, id: r.id }, verb === "abort");
    }
  }
  const gates = (r.last_evaluation && r.last_evaluation.gates) || [];
  const newName = `${r.model}@${r.version}`;
  return (
    `<h2>Rollout ${esc(r.id)}: ${esc(fromTo(r))} <span class="state ${esc(r.state)}">${esc(r.state)}</span></h2>` +
    (rolloutName(r) ? `<p class="muted">${esc(rolloutName(r))}</p>` : "") +
    `<p>created ${when(r.created_at)} by ${esc(r.created_by)}; stage ${esc(r.stage_name)} (${esc(r.stage + 1)}/${esc((r.stages || []).length)})${r.reason ? `; ${esc(r.reason)}` : ""}</p>` +
    `<div class="actions">${actions}</div>` +
    `<h3>Progress by stage</h3>${stageChart(r.stages, report.devices)}` +
    `<h3>Gates (last evaluation) against their thresholds</h3>${gateChart(gates)}` +
    `<div class="charts">` +
    lineChart({ title: "latency p95 (ms): new vs old", series: latencySeries(chart, "p95_mean") }) +
    lineChart({ title: "error rate: new vs old", series: latencySeries(chart, "error_rate"), format: (v) => pct(v) }) +
    histogramChart({
      title: "confidence (top-1 score): new vs old",
      sides: [
        { name: `new ${newName}`, counts: (diff.new || {}).confidence_histogram || [] },
        { name: `old (${diff.baseline || "baseline"})`, counts: (diff.old || {}).confidence_histogram || [] },
      ],
    }) +
    `</div><h3>Accuracy on labelled samples</h3>${table(["side", "versions", "accuracy", "labelled"], [accRow("new"), accRow("old")])}` +
    `<h3>New vs old by device class (latency, ms)</h3>` +
    `<p>baseline: ${esc(diff.baseline)}; error rate change: ${esc(num(diff.error_rate_increase))}; confidence distance (TV): ${esc(num(diff.confidence_tv_distance))}</p>` +
    table(["class", "new", "old", "p95 new/old"], diffRows) +
    `<h3>Comparison before rollout</h3>${renderComparison(compared)}` +
    `<h3>Decisions</h3>${table(["time", "stage", "action", "actor", "reason", "gates"], decisions)}`
  );
}
