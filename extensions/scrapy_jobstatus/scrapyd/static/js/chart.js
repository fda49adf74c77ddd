/* The arithmetic of the pages-per-minute chart: pure functions, no DOM, the
 * SVG's geometry in its own units (chartview.js draws it). A point is
 * [time ms, pages crawled, documents found, failed responses]. */

import { fmtElapsed, fmtRate } from "./format.js";

// A step's rate is measured when the counter readings around it are at most
// a step (or this) apart; otherwise it is an average over a longer gap.
export const MEASURED_GAP_MS = 5000;
// Below this, a rate per minute says nothing.
export const MIN_CHART_MS = 10000;
const MAX_SAMPLES = 2000;
const MAX_SAMPLED_JOBS = 500;
// Steps a run is cut in: the shortest that makes at most 40 of them.
const STEPS_S = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400];
const MAX_STEPS = 40;

export const FRAME = { width: 600, height: 170, left: 44, right: 8, top: 8, bottom: 22 };
const PLOT_W = FRAME.width - FRAME.left - FRAME.right;
const PLOT_H = FRAME.height - FRAME.top - FRAME.bottom;

/* The readings of each job's counters this page took, at the time the crawl
 * wrote them (updated_at, or completed_at once it ended): they extend the
 * job's series until it is read again, and stand in for it on a node
 * without one. */
export class Readings {
  #jobs = new Map();

  constructor({ maxPoints = MAX_SAMPLES, maxJobs = MAX_SAMPLED_JOBS } = {}) {
    this.maxPoints = maxPoints;
    this.maxJobs = maxJobs;
  }

  add(job) {
    if (!job.started_at) return;
    const t = Date.parse(job.is_active ? job.updated_at : job.completed_at || job.updated_at);
    if (Number.isNaN(t)) return;
    let list = this.#jobs.get(job.job_id);
    if (!list) {
      if (this.#jobs.size >= this.maxJobs) this.#jobs.delete(this.#jobs.keys().next().value);
      list = [];
      this.#jobs.set(job.job_id, list);
    }
    const last = list[list.length - 1];
    if (last && last[0] >= t) return;
    list.push([t, job.total_pages_crawled, job.total_documents_found, job.responses_failed]);
    // The first reading stays: it anchors the oldest rate.
    if (list.length > this.maxPoints) list.splice(1, list.length - this.maxPoints);
  }

  of(jobId) {
    return this.#jobs.get(jobId) || [];
  }
}

/* The points of a job's run, in time order, no counter ever going down;
 * recorded when they are the job's series as the node recorded it
 * (jobstatus.json?series=1), followed by the readings taken since. Without
 * a series (a node or a job older than it), the known points: the start (0
 * pages), the first response (1), the readings, and the end. Null for a job
 * not started. */
export function chartPoints(doc, series, readings = []) {
  const start = Date.parse(doc.started_at);
  if (Number.isNaN(start)) return null;
  const recorded = Array.isArray(series) && series.length > 0;
  let points;
  if (recorded) {
    points = series.map((p) => [Date.parse(p.t), p.pages, p.documents, p.failed]);
    const end = points[points.length - 1][0];
    points.push(...readings.filter(([t]) => t > end));
  } else {
    points = [[start, 0, 0, 0]];
    const first = (doc.history || []).find((event) => event.step === "first response");
    if (first) points.push([Date.parse(first.timestamp), 1, 0, 0]);
    points.push(...readings);
    if (!doc.is_active && doc.completed_at) {
      points.push([Date.parse(doc.completed_at), doc.total_pages_crawled, doc.total_documents_found, doc.responses_failed]);
    }
  }
  const sorted = points.filter(([t]) => !Number.isNaN(t) && t >= start).sort((a, b) => a[0] - b[0]);
  const result = [];
  const most = [0, 0, 0];
  for (const [t, ...values] of sorted) {
    values.forEach((value, i) => {
      if (typeof value === "number" && Number.isFinite(value)) most[i] = Math.max(most[i], value);
    });
    const point = [t, ...most];
    if (result.length && result[result.length - 1][0] === t) result[result.length - 1] = point;
    else result.push(point);
  }
  return { points: result, recorded };
}

/* A counter at time t, straight between the points around it. */
export function valueAt(points, t, index) {
  if (t <= points[0][0]) return points[0][index];
  for (let i = 1; i < points.length; i += 1) {
    const t1 = points[i][0];
    if (t <= t1) {
      const t0 = points[i - 1][0];
      const v0 = points[i - 1][index];
      const v1 = points[i][index];
      return t1 === t0 ? v1 : v0 + ((v1 - v0) * (t - t0)) / (t1 - t0);
    }
  }
  return points[points.length - 1][index];
}

/* A counter as known at time t: the last point's at or before it (a count
 * of events goes whole into the step whose point first shows it). */
export function knownAt(points, t, index) {
  let value = points[0][index];
  for (const point of points) {
    if (point[0] > t) break;
    value = point[index];
  }
  return value;
}

/* The longest time between two points that [a, b] overlaps. */
export function largestGap(points, a, b) {
  let gap = 0;
  for (let i = 1; i < points.length; i += 1) {
    const [t0] = points[i - 1];
    const [t1] = points[i];
    if (t1 > a && t0 < b) gap = Math.max(gap, t1 - t0);
  }
  return gap;
}

export function stepFor(span) {
  const step = STEPS_S.find((s) => span / (s * 1000) <= MAX_STEPS);
  return (step || STEPS_S[STEPS_S.length - 1]) * 1000;
}

/* The run cut in steps from its first point to its last: each one's pages
 * and documents per minute, its failed responses, and whether its rate was
 * measured. */
export function stepsOf(points, step) {
  const start = points[0][0];
  const end = points[points.length - 1][0];
  const perMinute = (a, b, index) => ((valueAt(points, b, index) - valueAt(points, a, index)) * 60000) / (b - a);
  const steps = [];
  for (let a = start; a < end; a += step) {
    const b = Math.min(a + step, end);
    steps.push({
      a,
      b,
      rate: perMinute(a, b, 1),
      documents: perMinute(a, b, 2),
      failed: knownAt(points, b, 3) - knownAt(points, a, 3),
      measured: largestGap(points, a, b) <= Math.max(step, MEASURED_GAP_MS),
    });
  }
  return steps;
}

/* Times and rates to the SVG's units: start at the plot's left, start +
 * span at its right; 0 at its bottom, peak at its top. */
export function scaleOf(start, span, peak) {
  return {
    x: (t) => FRAME.left + ((t - start) / span) * PLOT_W,
    y: (rate) => FRAME.top + PLOT_H - (rate / peak) * PLOT_H,
  };
}

/* A polyline's points through (x of the step's middle, y of value(step)). */
export function pathOf(steps, scale, value) {
  return steps.map((step) => `${scale.x((step.a + step.b) / 2).toFixed(1)},${scale.y(value(step)).toFixed(1)}`).join(" ");
}

/* The labels of the axes: the rate at the top, halfway and at the bottom;
 * the start and the end of the run. */
export function ticksOf(peak, span) {
  const { left, top, height } = FRAME;
  const bottom = top + PLOT_H;
  return [
    { x: left - 6, y: top + 4, anchor: "end", text: fmtRate(peak) },
    { x: left - 6, y: top + PLOT_H / 2 + 4, anchor: "end", text: fmtRate(peak / 2) },
    { x: left - 6, y: bottom + 4, anchor: "end", text: "0" },
    { x: left, y: height - 4, anchor: null, text: fmtElapsed(0) },
    { x: left + PLOT_W, y: height - 4, anchor: "end", text: fmtElapsed(span) },
  ];
}

/* Everything the chart draws for a run's points (at least two, MIN_CHART_MS
 * or more apart): the steps as bars, the documents' line (from a recorded
 * series only: known points say nothing of documents), the failures, the
 * axes' labels and the average rate. */
export function plot({ points, recorded }) {
  const start = points[0][0];
  const last = points[points.length - 1];
  const span = last[0] - start;
  const step = stepFor(span);
  const steps = stepsOf(points, step);
  const documents = recorded && last[2] > 0;
  const failures = recorded ? steps.reduce((sum, s) => sum + s.failed, 0) : 0;
  const peak = Math.max(...steps.map((s) => Math.max(s.rate, documents ? s.documents : 0)), 1);
  const scale = scaleOf(start, span, peak);
  const baseline = FRAME.top + PLOT_H;
  const bars = steps.map((s) => {
    const height = (s.rate / peak) * PLOT_H;
    const width = Math.max(1, ((s.b - s.a) / span) * PLOT_W - 1);
    return { ...s, from: s.a - start, to: s.b - start, x: scale.x(s.a), y: baseline - height, width, height };
  });
  return {
    start,
    span,
    step,
    bars,
    // The failures' marks sit under the axis.
    failY: baseline + 2,
    line: documents ? pathOf(steps, scale, (s) => s.documents) : null,
    failures,
    ticks: ticksOf(peak, span),
    axis: { x1: FRAME.left, x2: FRAME.left + PLOT_W, y: baseline, top: FRAME.top, middle: FRAME.top + PLOT_H / 2 },
    average: ((last[1] - points[0][1]) * 60000) / span,
    recorded,
  };
}

/* A progress bar's fill, 0 to 100; null when the progress is unknown. */
export function barValue(progress) {
  if (typeof progress !== "number" || !Number.isFinite(progress)) return null;
  return Math.max(0, Math.min(100, progress));
}
