/* A periodic schedule's rule in words, as the schedules panel shows it:
 * "every day at 02:00 Europe/Paris", "every 30 seconds", "at minute 0 of
 * every hour". The common shapes of cron are put in words; any other
 * expression (L, W, #, a day of the month and of the week both set...) is
 * shown as written. Pure functions, no DOM. */

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const DAY_NUMBERS = Object.fromEntries(DAYS.map((day, i) => [day.slice(0, 3).toLowerCase(), i]));
const MONTH_NUMBERS = Object.fromEntries(MONTHS.map((month, i) => [month.slice(0, 3).toLowerCase(), i + 1]));
const NICKNAMES = {
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
  "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@hourly": "0 * * * *",
};
// Each field's bounds, and the names it takes. Day 7 is Sunday, as 0.
const SECOND = { min: 0, max: 59 };
const MINUTE = { min: 0, max: 59 };
const HOUR = { min: 0, max: 23 };
const DAY_OF_MONTH = { min: 1, max: 31 };
const MONTH = { min: 1, max: 12, names: MONTH_NUMBERS };
const DAY_OF_WEEK = { min: 0, max: 7, names: DAY_NUMBERS };
// More times of day than this read better as a period, or as written.
const MAX_TIMES = 6;
const UNITS = [
  [86400, "day"],
  [3600, "hour"],
  [60, "minute"],
  [1, "second"],
];

/* A schedule's rule ({cron, timezone} or {every}) in words. */
export function ruleInWords({ cron, timezone, every } = {}) {
  if (typeof every === "number") return everyInWords(every);
  if (typeof cron === "string" && cron.trim()) return cronInWords(cron, timezone);
  return "—";
}

/* "every 30 seconds", "every 5 minutes", "every hour": in the largest unit
 * the period is a whole number of. */
export function everyInWords(seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return `every ${seconds} seconds`;
  const [size, unit] = UNITS.find(([size]) => seconds % size === 0) || [1, "second"];
  const count = seconds / size;
  return count === 1 ? `every ${unit}` : `every ${count} ${unit}s`;
}

/* A cron expression (five fields, or six with the seconds first) in words,
 * in its time zone (UTC when none is named); as written when it is not one
 * of the shapes below. */
export function cronInWords(expression, timezone) {
  const zone = timezone || "UTC";
  const written = expression.trim().replace(/\s+/g, " ");
  const words = describe(NICKNAMES[written.toLowerCase()] || written, zone);
  return words || `${written} (${zone})`;
}

function describe(expression, zone) {
  const texts = expression.split(" ");
  if (texts.length !== 5 && texts.length !== 6) return null;
  // Six fields: the seconds first, as the node reads them.
  const [second, minute, hour, dayOfMonth, month, dayOfWeek] = texts.length === 6 ? texts : ["0", ...texts];
  const fields = [
    parseField(second, SECOND),
    parseField(minute, MINUTE),
    parseField(hour, HOUR),
    parseField(dayOfMonth, DAY_OF_MONTH),
    parseField(month, MONTH),
    parseField(dayOfWeek, DAY_OF_WEEK),
  ];
  if (fields.includes(null)) return null;
  const [s, m, h, dom, mon, dow] = fields;
  const days = dayWords(dom, mon, dow);
  if (!days) return null;
  const times = clockTimes(s, m, h);
  if (times) return `${days.every} at ${joinWords(times)} ${zone}`;
  const period = periodWords(s, m, h, zone);
  if (!period) return null;
  if (!days.on) return period.text;
  return `${days.on}, ${period.text}${period.zoned ? "" : ` (${zone})`}`;
}

/* A field as {any, step, values, ranges}: values are the numbers it takes,
 * sorted; ranges the a-b parts it was written with; step an n in "* /n".
 * Null for anything else (L, W, #, ?, a number out of bounds). */
export function parseField(text, { min, max, names }) {
  if (text === "*") return { any: true, step: 1, values: numbers(min, max, 1), ranges: [] };
  const values = new Set();
  const ranges = [];
  let step = null;
  for (const part of text.split(",")) {
    const match = /^([^/-]+|\*)(?:-([^/]+))?(?:\/(\d+))?$/.exec(part);
    if (!match) return null;
    const [, first, last, every] = match;
    const by = every === undefined ? 1 : Number(every);
    let low;
    let high;
    if (first === "*") {
      if (last !== undefined) return null;
      [low, high] = [min, max];
      if (text === part) step = by;
    } else {
      low = number(first, min, max, names);
      high = last === undefined ? (every === undefined ? low : max) : number(last, min, max, names);
    }
    if (low === null || high === null || low > high || by < 1) return null;
    if (last !== undefined && by === 1) ranges.push([low, high]);
    for (const value of numbers(low, high, by)) values.add(value);
  }
  // Sunday is 0 or 7.
  if (names === DAY_NUMBERS && values.delete(7)) values.add(0);
  const sorted = [...values].sort((a, b) => a - b);
  const any = sorted.length === max - min + 1 || (names === DAY_NUMBERS && sorted.length === 7);
  return { any, step: any ? 1 : step, values: sorted, ranges };
}

function number(text, min, max, names) {
  const value = /^\d+$/.test(text) ? Number(text) : names && names[text.toLowerCase()];
  return Number.isInteger(value) && value >= min && value <= max ? value : null;
}

function numbers(low, high, by) {
  const list = [];
  for (let value = low; value <= high; value += by) list.push(value);
  return list;
}

/* The days a rule fires on: {every: "every day", on: ""} or {every:
 * "every Monday", on: "on Monday"}; null when cron's rule is hard to say
 * (a day of the month and a day of the week both set fire on either). */
function dayWords(dom, mon, dow) {
  if (!dom.any && !dow.any) return null;
  const months = mon.any ? null : joinWords(mon.values.map((n) => MONTHS[n - 1]));
  if (!dom.any) {
    const list = joinWords(dom.values.map(String));
    if (!months) {
      const text = `on ${dom.values.length === 1 ? "day" : "days"} ${list} of every month`;
      return { every: text, on: text };
    }
    if (mon.values.length === 1 && dom.values.length === 1) {
      return { every: `every year on ${months} ${list}`, on: `on ${months} ${list}` };
    }
    const text = `on ${dom.values.length === 1 ? "day" : "days"} ${list} of ${months}`;
    return { every: text, on: text };
  }
  const inMonths = months ? ` in ${months}` : "";
  if (dow.any) return months ? { every: `every day${inMonths}`, on: `in ${months}` } : { every: "every day", on: "" };
  const weekdays = dow.values.join(",") === "1,2,3,4,5";
  const [range] = dow.ranges;
  let names;
  if (weekdays) names = null;
  else if (dow.ranges.length === 1 && range[1] - range[0] >= 2 && dow.values.length === range[1] - range[0] + 1) {
    names = `${DAYS[range[0]]} to ${DAYS[range[1] % 7]}`;
  } else {
    // Monday first, as a week is read.
    const week = [...dow.values.filter((n) => n > 0), ...dow.values.filter((n) => n === 0)];
    names = joinWords(week.map((n) => DAYS[n]));
  }
  if (!names) return { every: `every weekday${inMonths}`, on: `on weekdays${inMonths}` };
  return { every: `every ${names}${inMonths}`, on: `on ${names}${inMonths}` };
}

/* The times of day a rule fires at ("02:00", "09:30:15"), when they are
 * few; null for a rule that fires more often. */
function clockTimes(s, m, h) {
  if (s.values.length !== 1 || h.any) return null;
  if (m.values.length !== 1 && h.values.length !== 1) return null;
  if (m.values.length * h.values.length > MAX_TIMES) return null;
  const second = s.values[0];
  return h.values.flatMap((hour) => m.values.map((minute) => clock(hour, minute, second)));
}

/* A rule that fires many times a day: {text, zoned} ("every 5 minutes",
 * "at minute 0 of every hour", "every 15 minutes from 09:00 to 17:45
 * Europe/Paris"); zoned when the text names its zone. */
function periodWords(s, m, h, zone) {
  if (!s.any && s.values.length !== 1) {
    // Seconds: only a plain step of every minute.
    if (s.step && m.any && h.any) return { text: everyInWords(s.step), zoned: false };
    return null;
  }
  if (s.any) return m.any && h.any ? { text: "every second", zoned: false } : null;
  if (s.values[0] !== 0) return null;
  let minutes;
  if (m.any || m.step) minutes = everyInWords(m.step * 60);
  else if (m.values.length <= MAX_TIMES) {
    const label = m.values.length === 1 ? "minute" : "minutes";
    minutes = `at ${label} ${joinWords(m.values.map(String))} of every`;
  } else return null;
  const at = minutes.startsWith("at ");
  if (h.any) return { text: at ? `${minutes} hour` : minutes, zoned: false };
  if (h.step && 24 % h.step === 0 && at) return { text: `${minutes} ${h.step} hours`, zoned: false };
  // A span of hours: "every 15 minutes from 09:00 to 17:45", "every hour from 09:30 to 17:30".
  const [range] = h.ranges;
  if (h.ranges.length !== 1 || h.values.length !== range[1] - range[0] + 1) return null;
  const span = `from ${clock(range[0], m.values[0], 0)} to ${clock(range[1], m.values[m.values.length - 1], 0)} ${zone}`;
  if (!at) return { text: `${minutes} ${span}`, zoned: true };
  return { text: m.values.length === 1 ? `every hour ${span}` : `${minutes} hour ${span}`, zoned: true };
}

const pad = (n) => String(n).padStart(2, "0");

function clock(hour, minute, second) {
  return `${pad(hour)}:${pad(minute)}${second ? `:${pad(second)}` : ""}`;
}

/* "a", "a and b", "a, b and c". */
export function joinWords(list) {
  if (list.length <= 1) return list.join("");
  return `${list.slice(0, -1).join(", ")} and ${list[list.length - 1]}`;
}
