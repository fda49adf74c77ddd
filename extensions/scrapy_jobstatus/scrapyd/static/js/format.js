/* How the page writes numbers, times and statuses: pure functions, no DOM. */

export const STATUSES = ["pending", "running", "pausing", "paused", "cancelling", "finalizing", "completed", "failed", "cancelled"];

export function knownStatus(status) {
  return STATUSES.includes(status) ? status : "unknown";
}

export const pad = (n) => String(n).padStart(2, "0");
export const fmtInt = (n) => (typeof n === "number" ? n.toLocaleString("en") : "—");

/* A time in the browser's zone: the time of day today, with the date otherwise. */
export function fmtTime(iso) {
  const t = new Date(iso);
  if (!iso || Number.isNaN(t.getTime())) return "—";
  const hms = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  if (t.toDateString() === new Date().toDateString()) return hms;
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${hms}`;
}

export function fmtAgo(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  const total = Math.floor(s);
  if (total < 3600) return `${Math.floor(total / 60)} m ${pad(total % 60)} s`;
  if (total < 86400) return `${Math.floor(total / 3600)} h ${pad(Math.floor((total % 3600) / 60))} m`;
  return `${Math.floor(total / 86400)} d ${Math.floor((total % 86400) / 3600)} h`;
}

/* A time since a job's start, as a clock reads it: 0:00, 12:30, 1:02:03. */
export function fmtElapsed(ms) {
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}:${pad(s % 60)}`;
  return `${Math.floor(s / 3600)}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

export function fmtPercent(value) {
  if (value > 0 && value < 10) return `${value.toFixed(1)}%`;
  return `${Math.floor(value)}%`;
}

export function fmtRate(perMinute) {
  if (perMinute >= 100) return String(Math.round(perMinute));
  if (perMinute >= 10) return perMinute.toFixed(1).replace(/\.0$/, "");
  return perMinute.toFixed(2).replace(/\.?0+$/, "") || "0";
}
