// EdgeFleet dashboard: the browser wiring. Reads the fleet server's JSON API with the operator's
// token (kept in this tab's sessionStorage), routes #/fleet, #/device/<id>, #/model/<n>/<v> and
// #/rollout/<id> to the pure views, and sends the operator's actions. Messages from the server
// are shown with textContent; everything else goes through the views, which escape.
import { can, renderFleet, renderDevices, renderDevice, renderModel, renderRollout } from "./views.mjs";

const REFRESH_MS = 5000;
const TOKEN_KEY = "edgefleet.token";
const enc = encodeURIComponent;
export const API = {
  whoami: "/api/v1/whoami",
  devices: "/api/v1/devices",
  device: (id) => `/api/v1/devices/${enc(id)}`,
  telemetry: (id) => `/api/v1/devices/${enc(id)}/telemetry?limit=200`,
  events: (id) => `/api/v1/devices/${enc(id)}/events?limit=50`,
  pin: (id) => `/api/v1/devices/${enc(id)}/pin`,
  tags: (id) => `/api/v1/devices/${enc(id)}/tags`,
  rollouts: "/api/v1/rollouts?limit=20",
  createRollout: "/api/v1/rollouts",
  report: (id) => `/api/v1/rollouts/${Number(id)}/report`,
  act: (id, verb) => `/api/v1/rollouts/${Number(id)}/${enc(verb)}`,
  models: "/api/v1/models",
  model: (n, v) => `/api/v1/models/${enc(n)}/${enc(v)}`,
  lineage: (n, v) => `/api/v1/models/${enc(n)}/${enc(v)}/lineage`,
  quality: (n, v) => `/api/v1/models/${enc(n)}/${enc(v)}/quality`,
  capture: (n, v) => `/api/v1/models/${enc(n)}/${enc(v)}/capture`,
  samples: (n, v) => `/api/v1/samples?model=${enc(n)}&version=${enc(v)}&limit=20`,
  label: (id) => `/api/v1/samples/${Number(id)}/label`,
  latency: (query) => `/api/v1/charts/latency?${query}`,
  compare: (n, v) => `/api/v1/models/${enc(n)}/${enc(v)}/compare`,
  ingest: "/api/v1/ingest/stats",
  drift: "/api/v1/drift?limit=20",
  pipelines: "/api/v1/pipelines/runs?limit=20",
  enrollment: "/api/v1/enrollment-tokens",
  revokeEnrollment: (id) => `/api/v1/enrollment-tokens/${Number(id)}`,
};

const DAY_MS = 86_400_000;
let fleetDevices = [];  // for the filter, between refreshes
const $ = (id) => document.getElementById(id);

async function call(path, { method = "GET", body } = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) {
      /* not JSON */
    }
    const err = new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    err.status = response.status;
    throw err;
  }
  return response.status === 204 ? null : response.json();
}

const optional = (p) => p.catch(() => null);

// A chart's series is a database scan over its whole window: asked again at most once a minute,
// not on every 5-second refresh.
const CHART_TTL_MS = 60_000;
const chartCache = new Map();
function chartOf(path) {
  const hit = chartCache.get(path);
  if (hit && Date.now() - hit.at < CHART_TTL_MS) return hit.value;
  const value = optional(call(path));
  chartCache.clear();  // one view's charts at a time
  chartCache.set(path, { at: Date.now(), value });
  return value;
}
const list = (text) => String(text || "").split(",").map((s) => s.trim()).filter(Boolean);

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [view, ...rest] = parts;
  if (view === "device" && rest[0]) return { view, id: rest[0] };
  if (view === "model" && rest[1]) return { view, name: rest[0], version: rest[1] };
  if (view === "rollout" && rest[0]) return { view, id: Number(rest[0]) };
  return { view: "fleet" };
}

// -- loading one view ---------------------------------------------------------------------------
const LOAD = {
  async fleet() {
    const [devices, rollouts, models, ingest, drift, enrollment, pipelines] = await Promise.all([
      call(API.devices), call(API.rollouts), call(API.models),
      optional(call(API.ingest)), optional(call(API.drift)), optional(call(API.enrollment)),
      optional(call(API.pipelines)),
    ]);  // prettier-ignore
    return { devices, rollouts, models, ingest, drift, enrollment, pipelines };
  },
  async device(r) {
    const [device, telemetry, events] = await Promise.all([call(API.device(r.id)), call(API.telemetry(r.id)), call(API.events(r.id))]);
    return { device, telemetry, events };
  },
  async model(r) {
    const [model, lineage, versions, chart, quality, samples, capture] = await Promise.all([
      call(API.model(r.name, r.version)), optional(call(API.lineage(r.name, r.version))), call(API.models),
      chartOf(API.latency(`model=${enc(r.name)}&buckets=120`)), optional(call(API.quality(r.name, r.version))),
      optional(call(API.samples(r.name, r.version))), optional(call(API.capture(r.name, r.version))),
    ]);  // prettier-ignore
    return { model, lineage, versions, chart, quality, samples, capture };
  },
  async rollout(r) {
    const report = await call(API.report(r.id));
    const ro = report.rollout;
    const versions = [ro.version, ...Object.keys(ro.from_versions || {}).filter((v) => v.startsWith(`${ro.model}@`)).map((v) => v.split("@")[1])];
    const now = Math.ceil(Date.now() / 60_000) * 60_000;  // to the minute: the chart's cache key
    const since = new Date(Math.max(Date.parse(ro.created_at) - 3600_000, now - 30 * DAY_MS)).toISOString();
    const until = ro.finished_at && Date.parse(ro.finished_at) > Date.parse(since) ? new Date(Date.parse(ro.finished_at) + 60_000).toISOString() : new Date(now).toISOString();
    const query = `model=${enc(ro.model)}&since=${enc(since)}&until=${enc(until)}&buckets=120&` + [...new Set(versions)].map((v) => `version=${enc(v)}`).join("&");
    const [chart, compared] = await Promise.all([chartOf(API.latency(query)), optional(call(API.compare(ro.model, ro.version)))]);
    return { report, chart, compared };
  },
};

function draw(r, data, ctx) {
  if (r.view === "fleet") {
    if (!$("fleet")) $("view").replaceChildren($("fleet-template").content.cloneNode(true));
    const parts = renderFleet(data, ctx);
    for (const [id, html] of Object.entries(parts)) $(id).innerHTML = html;
    fleetDevices = data.devices;
    $("devices").innerHTML = renderDevices(fleetDevices, $("filter").value);
    for (const el of document.querySelectorAll("#view [data-needs]")) el.hidden = !can(ctx, el.dataset.needs);
    return;
  }
  const html = { device: renderDevice, model: renderModel, rollout: renderRollout }[r.view](data, ctx);
  $("view").innerHTML = `<section>${html}</section>`;
}

// -- actions ------------------------------------------------------------------------------------
function confirmFirst(text) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-reason").value = "";
    const done = (ok) => {
      $("confirm-ok").onclick = $("confirm-cancel").onclick = null;
      dialog.close();
      resolve(ok ? { reason: $("confirm-reason").value.trim() } : null);
    };
    $("confirm-ok").onclick = () => done(true);
    $("confirm-cancel").onclick = () => done(false);
    dialog.showModal();
  });
}

const BUTTONS = {
  async rollout(b) {
    const { verb, id } = b.dataset;
    let body = { reason: "" };
    if (verb === "abort") {
      body = await confirmFirst(`Abort rollout ${id}? Its devices go back to their previous version.`);
      if (!body) return null;
    }
    await call(API.act(id, verb), { method: "POST", body });
    return `rollout ${id}: ${verb} done`;
  },
  async unpin(b) {
    if (!(await confirmFirst(`Unpin ${b.dataset.device}? Assignments and rollouts may change its model.`))) return null;
    await call(API.pin(b.dataset.device), { method: "DELETE" });
    return `${b.dataset.device} unpinned`;
  },
  async "enroll-revoke"(b) {
    if (!(await confirmFirst(`Revoke enrollment token ${b.dataset.id}? Devices can no longer enroll with it.`))) return null;
    await call(API.revokeEnrollment(b.dataset.id), { method: "DELETE" });
    return `enrollment token ${b.dataset.id} revoked`;
  },
};

const number = (v) => (v === "" || v === undefined ? undefined : Number(v));

const FORMS = {
  async pin(f, v) {
    await call(API.pin(f.dataset.device), { method: "PUT", body: { model: v.model, version: v.version } });
    return `${f.dataset.device} pinned to ${v.model}@${v.version}`;
  },
  async tags(f, v) {
    await call(API.tags(f.dataset.device), { method: "PATCH", body: { add: list(v.add), remove: list(v.remove) } });
    return `tags of ${f.dataset.device} updated`;
  },
  async label(f, v) {
    await call(API.label(f.dataset.sample), { method: "PUT", body: { label: v.label } });
    return `sample ${f.dataset.sample} labelled ${v.label}`;
  },
  async capture(f, v) {
    const policy = { random: number(v.random) ?? 0, max_per_hour: number(v.max_per_hour) ?? 60 };
    if (v.low_confidence !== "") policy.low_confidence = number(v.low_confidence);
    await call(API.capture(f.dataset.model, f.dataset.version), { method: "PUT", body: policy });
    return `capture policy of ${f.dataset.model}@${f.dataset.version} set`;
  },
  async enroll(f, v) {
    const body = { tags: list(v.tags), uses: number(v.uses) ?? 1, expires_in_s: Math.round((number(v.hours) ?? 24) * 3600) };
    if (v.device_class) body.device_class = v.device_class;
    const made = await call(API.enrollment, { method: "POST", body });
    return `enrollment token ${made.id} (shown once): ${made.token}`;
  },
  async rollout(f, v) {
    const body = {
      model: f.dataset.model,
      version: f.dataset.version,
      selector: { tags: list(v.tags), device_classes: list(v.device_classes), device_ids: list(v.device_ids) },
      strategy: { canary_percent: number(v.canary_percent), batches: list(v.batches).map(Number), soak_s: number(v.soak_s), require_approval: v.require_approval === "on" },
      gates: { latency_p95_ratio: { max_ratio: number(v.max_ratio) }, error_rate: { max_increase: number(v.max_increase) } },
    };
    const made = await call(API.createRollout, { method: "POST", body });
    location.hash = `#/rollout/${made.id}`;
    return `rollout ${made.id} started`;
  },
};

function notice(text, bad = false) {
  $("notice").textContent = text;
  $("notice").className = bad ? "bad" : "ok";
}

// A form being filled in is never redrawn under the user's hands.
function typing() {
  const active = document.activeElement;
  return Boolean(document.querySelector("#view form[data-dirty]") || (active && active.closest("#view form")));
}

// -- boot ---------------------------------------------------------------------------------------
function boot() {
  let timer = null;
  let role = null;

  async function refresh() {
    if (!sessionStorage.getItem(TOKEN_KEY)) return;
    if (typing()) return;
    const r = route();
    try {
      if (role === null) role = (await call(API.whoami)).role;
      const ctx = { role, now: Date.now() };
      const data = await LOAD[r.view](r);
      // The user moved on, or started typing, while the data loaded: keep what they see.
      if (JSON.stringify(route()) !== JSON.stringify(r) || typing()) return;
      draw(r, data, ctx);
      $("status").textContent = `${role}; updated ${new Date().toLocaleTimeString()}`;
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
    role = null;
    $("logout").hidden = true;
    $("token").hidden = false;
    $("signin").hidden = false;
    $("view").innerHTML = "";
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
  window.addEventListener("hashchange", () => {
    $("view").innerHTML = "";
    refresh();
  });
  $("view").addEventListener("input", (event) => {
    if (event.target.id === "filter") {
      $("devices").innerHTML = renderDevices(fleetDevices, event.target.value);
      return;
    }
    const form = event.target.closest("form");
    if (form) form.dataset.dirty = "1";
  });
  $("view").addEventListener("click", async (event) => {
    const b = event.target.closest("button[data-action]");
    if (!b || !BUTTONS[b.dataset.action]) return;
    b.disabled = true;
    try {
      const said = await BUTTONS[b.dataset.action](b);
      if (said) notice(said);
    } catch (err) {
      notice(err.message, true);
    } finally {
      b.disabled = false;
    }
    refresh();
  });
  $("view").addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-form]");
    if (!form || !FORMS[form.dataset.form]) return;
    event.preventDefault();
    const values = {};
    for (const el of form.elements) if (el.name) values[el.name] = el.type === "checkbox" ? (el.checked ? "on" : "") : el.value.trim();
    try {
      notice(await FORMS[form.dataset.form](form, values));
      delete form.dataset.dirty;
      if (document.activeElement) document.activeElement.blur();
    } catch (err) {
      notice(err.message, true);
    }
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

if (typeof document !== "undefined") document.addEventListener("DOMContentLoaded", boot);
