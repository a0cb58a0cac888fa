// How numbers, times and sizes read on the pages.

const nf = new Intl.NumberFormat('en');

export function num(n) {
  return n === null || n === undefined ? '—' : nf.format(n);
}

/** 1234567 → 1.2M */
export function short(n) {
  if (n === null || n === undefined) return '—';
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return nf.format(n);
}

export function ms(n) {
  if (n === null || n === undefined) return '—';
  if (n >= 10000) return `${(n / 1000).toFixed(1)} s`;
  return `${Math.round(n)} ms`;
}

export function pct(part, whole) {
  if (!whole) return '—';
  return `${((100 * part) / whole).toFixed(part && part / whole < 0.01 ? 2 : 1)} %`;
}

const pad = (n) => String(n).padStart(2, '0');

/** Unix milliseconds → "2026-12-03 17:44:05" in local time. */
export function dateTime(atMs) {
  if (!atMs) return '—';
  const d = new Date(atMs);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function ago(atMs) {
  if (!atMs) return 'never';
  const s = Math.round((Date.now() - atMs) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** Unix seconds → the value of an <input type="datetime-local">. */
export function toLocalInput(unixSecs) {
  if (!unixSecs) return '';
  const d = new Date(unixSecs * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fromLocalInput(value) {
  if (!value) return null;
  const t = new Date(value).getTime();
  return Number.isFinite(t) ? Math.floor(t / 1000) : null;
}

/** "a, b\nc" → ["a", "b", "c"] */
export function list(text) {
  return String(text || '')
    .split(/[\n,]/)
    .map((s) => s.trim())
    .filter(Boolean);
}
