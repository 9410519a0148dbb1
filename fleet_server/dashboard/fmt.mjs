// Formatting shared by the views and charts. Every value that came from a device or an operator
// goes through esc() before it is put into HTML or SVG; nothing here touches the DOM.

export function esc(value) {
  if (value === null || value === undefined) return "";
  return String(value)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

export function ref(r) {
  return r ? `${r.name}@${r.version}` : "";
}

export function num(value, digits = 3) {
  return typeof value === "number" && Number.isFinite(value) ? value.toPrecision(digits) : "n/a";
}

export function pct(value) {
  return typeof value === "number" && Number.isFinite(value) ? `${(100 * value).toFixed(1)} %` : "n/a";
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (Number.isNaN(s)) return "?";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const pad = (n) => String(n).padStart(2, "0");

// One way to show a time everywhere: local "YYYY-MM-DD HH:MM:SS", the UTC ISO text on hover.
export function localTime(iso) {
  const t = new Date(iso);
  if (!iso || Number.isNaN(t.getTime())) return "";
  return (
    `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
    `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`
  );
}

export function when(iso) {
  if (!iso) return '<span class="muted">never</span>';
  const text = localTime(iso);
  if (!text) return esc(iso);
  return `<time datetime="${esc(iso)}" title="${esc(iso)}">${esc(text)}</time>`;
}

export function table(headers, rows, cls = "") {
  if (!rows.length) return '<p class="muted">none</p>';
  const head = headers.map((h) => `<th>${esc(h)}</th>`).join("");
  return `<table class="${esc(cls)}"><thead><tr>${head}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

// A link to another view; the route's parts are URI-encoded and the text escaped.
export function link(text, ...parts) {
  const href = "#/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
  return `<a href="${esc(href)}">${esc(text)}</a>`;
}

// A button the page wires by its data-action; hidden from a role that could not use it.
export function button(label, action, data = {}, danger = false) {
  const attrs = Object.entries(data)
    .map(([k, v]) => ` data-${esc(k)}="${esc(v)}"`)
    .join("");
  const cls = danger ? "act danger" : "act";
  return `<button type="button" class="${cls}" data-action="${esc(action)}"${attrs}>${esc(label)}</button>`;
}
