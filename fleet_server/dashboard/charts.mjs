// SVG charts drawn by our own code: no library, no inline style (CSP), every label escaped.
// Each chart is a pure function (data in, SVG string out). The server down-samples time series
// (GET /api/v1/charts/...: at most a few hundred points per series), so a chart stays a few
// kilobytes whatever the fleet's size. Each series' path carries its numbers in data-points
// ("t:value,..."), which the browser tests compare with the API's answer.
import { esc, localTime, num } from "./fmt.mjs";

const W = 640;
const H = 200;
const M = { left: 48, right: 12, top: 12, bottom: 28 };
export const MAX_SERIES = 8;

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * step) return m * step;
  return 10 * step;
}

function frame(title, body, legend, cls) {
  const items = legend
    .map((l, i) => `<span class="key s${i % MAX_SERIES}"></span>${esc(l)}`)
    .join(" ");
  return (
    `<figure class="chart ${esc(cls)}"><figcaption>${esc(title)}</figcaption>` +
    `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">${body}</svg>` +
    `<div class="legend">${items}</div></figure>`
  );
}

function yAxis(max, format) {
  let out = "";
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const y = M.top + (H - M.top - M.bottom) * (1 - i / 4);
    out +=
      `<line class="grid" x1="${M.left}" x2="${W - M.right}" y1="${y}" y2="${y}"></line>` +
      `<text class="tick" x="${M.left - 4}" y="${y + 4}" text-anchor="end">${esc(format(v))}</text>`;
  }
  return out;
}

// series: [{name, points: [{t: ISO, v: number|null}]}]; a null value breaks the line.
export function lineChart({ title, series, format = (v) => num(v, 3), empty = "no data in this window" }) {
  const shown = series.slice(0, MAX_SERIES);
  const all = shown.flatMap((s) => s.points.filter((p) => typeof p.v === "number"));
  if (!all.length) return `<figure class="chart"><figcaption>${esc(title)}</figcaption><p class="muted">${esc(empty)}</p></figure>`;
  const times = all.map((p) => Date.parse(p.t));
  const t0 = Math.min(...times);
  const t1 = Math.max(...times, t0 + 1);
  const max = niceMax(Math.max(...all.map((p) => p.v)));
  const x = (t) => M.left + ((W - M.left - M.right) * (Date.parse(t) - t0)) / (t1 - t0);
  const y = (v) => M.top + (H - M.top - M.bottom) * (1 - v / max);
  let body = yAxis(max, format);
  for (let i = 0; i <= 3; i++) {
    const t = new Date(t0 + ((t1 - t0) * i) / 3).toISOString();
    const anchor = ["start", "middle", "middle", "end"][i];  // the ends stay inside the frame
    body += `<text class="tick" x="${x(t)}" y="${H - 8}" text-anchor="${anchor}">${esc(localTime(t).slice(5, 16))}</text>`;
  }
  shown.forEach((s, i) => {
    let d = "";
    let pen = "M";
    for (const p of s.points) {
      if (typeof p.v !== "number") {
        pen = "M";
        continue;
      }
      d += `${pen}${x(p.t).toFixed(1)} ${y(p.v).toFixed(1)} `;
      pen = "L";
    }
    const data = s.points.map((p) => `${p.t}:${p.v === null ? "" : p.v}`).join(",");
    body +=
      `<path class="line s${i}" data-series="${esc(s.name)}" data-points="${esc(data)}" d="${d.trim()}">` +
      `<title>${esc(s.name)}</title></path>`;
  });
  return frame(title, body, shown.map((s) => s.name), "line");
}

// sides: [{name, counts: [n per bin]}], bins evenly over [0, 1]; drawn as shares of each side.
export function histogramChart({ title, sides }) {
  const shown = sides.filter((s) => Array.isArray(s.counts) && s.counts.some((c) => c > 0));
  if (!shown.length) return `<figure class="chart"><figcaption>${esc(title)}</figcaption><p class="muted">no predictions yet</p></figure>`;
  const bins = Math.max(...shown.map((s) => s.counts.length));
  const shares = shown.map((s) => {
    const total = s.counts.reduce((a, b) => a + b, 0) || 1;
    return s.counts.map((c) => c / total);
  });
  const max = niceMax(Math.max(...shares.flat()));
  const slot = (W - M.left - M.right) / bins;
  const bar = slot / (shown.length + 1);
  const y = (v) => M.top + (H - M.top - M.bottom) * (1 - v / max);
  let body = yAxis(max, (v) => `${Math.round(100 * v)} %`);
  shares.forEach((side, i) => {
    side.forEach((v, b) => {
      const x0 = M.left + b * slot + bar * (i + 0.5);
      body +=
        `<rect class="bar s${i}" x="${x0.toFixed(1)}" y="${y(v).toFixed(1)}" width="${bar.toFixed(1)}" ` +
        `height="${(H - M.bottom - y(v)).toFixed(1)}" data-share="${v.toFixed(4)}"><title>${esc(shown[i].name)}: ${(100 * v).toFixed(1)} %</title></rect>`;
    });
  });
  for (let b = 0; b <= bins; b += Math.max(1, Math.round(bins / 5))) {
    body += `<text class="tick" x="${M.left + b * slot}" y="${H - 8}" text-anchor="middle">${(b / bins).toFixed(1)}</text>`;
  }
  return frame(title, body, shown.map((s) => s.name), "hist");
}

// gates: [{name, status, value, threshold, samples, min_samples}]: the value against its threshold.
export function gateChart(gates) {
  const rows = (gates || []).filter((g) => g && typeof g.threshold === "number");
  if (!rows.length) return '<p class="muted">no gate evaluated yet</p>';
  const rowH = 26;
  const height = rows.length * rowH + 8;
  const left = 150;
  const width = W - left - 190;  // room on the right for "value / threshold (status)"
  let body = "";
  rows.forEach((g, i) => {
    const value = typeof g.value === "number" ? g.value : null;
    const scale = niceMax(Math.max(g.threshold, value || 0) * 1.1) || 1;
    const yy = 4 + i * rowH;
    const status = { pass: "ok", fail: "bad", wait: "warn", insufficient: "warn" }[g.status] || "muted";
    const bw = value === null ? 0 : (width * Math.min(value, scale)) / scale;
    const tx = left + (width * Math.max(0, g.threshold)) / scale;
    body +=
      `<text class="tick" x="${left - 6}" y="${yy + 16}" text-anchor="end">${esc(g.name)}</text>` +
      `<rect class="track" x="${left}" y="${yy + 4}" width="${width}" height="16"></rect>` +
      `<rect class="gatebar ${status}" x="${left}" y="${yy + 4}" width="${bw.toFixed(1)}" height="16" ` +
      `data-gate="${esc(g.name)}" data-value="${esc(value === null ? "" : value)}" data-threshold="${esc(g.threshold)}"></rect>` +
      `<line class="threshold" x1="${tx.toFixed(1)}" x2="${tx.toFixed(1)}" y1="${yy}" y2="${yy + 24}"></line>` +
      `<text class="tick" x="${left + width + 6}" y="${yy + 16}">${esc(value === null ? "n/a" : num(value))} / ${esc(num(g.threshold))} (${esc(g.status)})</text>`;
  });
  return `<svg class="gates" viewBox="0 0 ${W} ${height}" role="img" aria-label="gate values against thresholds">${body}</svg>`;
}

// Rollout progress: one bar per stage, its devices by status (from the report's device list).
export function stageChart(stages, devices) {
  if (!stages || !stages.length) return "";
  const statuses = ["committed", "assigned", "pending", "failed", "reverted", "skipped"];
  // stage.devices counts this stage and the ones before it; each bar is the stage's own share.
  const own = stages.map((s, i) => s.devices - (i ? stages[i - 1].devices : 0));
  const total = Math.max(1, ...own);
  const rowH = 26;
  const left = 150;
  const width = W - left - 190;  // room on the right for "value / threshold (status)"
  let body = "";
  stages.forEach((stage, i) => {
    const mine = (devices || []).filter((d) => d.stage === stage.index);
    const yy = 4 + i * rowH;
    let x0 = left;
    body += `<text class="tick" x="${left - 6}" y="${yy + 16}" text-anchor="end">${esc(stage.name)}</text>`;
    body += `<rect class="track" x="${left}" y="${yy + 4}" width="${((width * own[i]) / total).toFixed(1)}" height="16"></rect>`;
    for (const st of statuses) {
      const n = mine.filter((d) => d.status === st).length;
      if (!n) continue;
      const w = (width * n) / total;
      body += `<rect class="stage ${st}" x="${x0.toFixed(1)}" y="${yy + 4}" width="${w.toFixed(1)}" height="16"><title>${esc(st)}: ${n}</title></rect>`;
      x0 += w;
    }
    body += `<text class="tick" x="${left + width + 6}" y="${yy + 16}">${mine.filter((d) => d.status === "committed").length} / ${esc(own[i])} committed</text>`;
  });
  return `<svg class="stages" viewBox="0 0 ${W} ${stages.length * rowH + 8}" role="img" aria-label="rollout progress by stage">${body}</svg>`;
}
