/* The jobs table, and the parts of a job's row the details panel shows too:
 * its progress bar, estimate, files and buttons. */

import { errorsUrl, itemsUrl, logUrl, serves } from "./api.js";
import { barValue } from "./chart.js";
import { $, badge, cell, el, link, timeEl } from "./dom.js";
import { fmtDuration, fmtInt, fmtPercent, knownStatus } from "./format.js";
import { nodeBase } from "./nodes.js";

// Statuses in which a crawl is moving: their bars animate when progress is unknown.
const MOVING = new Set(["running", "pausing", "cancelling", "finalizing"]);

export function progressBar(job) {
  const value = barValue(job.progress);
  const known = value !== null;
  const classes = ["bar", `bar-${knownStatus(job.status)}`];
  if (!known) classes.push("indeterminate");
  if (!known && MOVING.has(job.status)) classes.push("moving");
  const bar = el("div", {
    class: classes.join(" "),
    role: "progressbar",
    "aria-label": "Progress",
    "aria-valuemin": 0,
    "aria-valuemax": 100,
    "aria-valuenow": known ? value.toFixed(1) : null,
  });
  const fill = el("span", { class: "fill" });
  if (known) fill.style.width = `${value}%`;
  bar.append(fill);
  return el("div", { class: "progress" }, bar, el("span", { class: "pct", text: known ? fmtPercent(value) : "—" }));
}

export function eta(job) {
  if (!job.is_active || !job.estimated_completion) return "—";
  const left = (Date.parse(job.estimated_completion) - Date.now()) / 1000;
  return el(
    "span",
    { class: "eta-value" },
    timeEl(job.estimated_completion),
    el("span", { class: "muted small", text: left > 0 ? `in ${fmtDuration(left)}` : "any moment" }),
  );
}

/* A job's attempt and how many it may make ({attempt, total}), for a job
 * that may be retried or was; null for one that runs once. */
export function attemptOf(job) {
  const attempt = Number.isInteger(job.attempt) && job.attempt > 0 ? job.attempt : 1;
  const retries = Number.isInteger(job.retries) && job.retries > 0 ? job.retries : 0;
  if (!retries && attempt === 1) return null;
  return { attempt, total: Math.max(attempt, retries + 1) };
}

export function retryAt(job) {
  return job.status === "pending" && job.retry_at ? job.retry_at : null;
}

function statusCell(job) {
  const attempt = attemptOf(job);
  const retry = retryAt(job);
  return [
    badge(job.status),
    attempt ? el("span", { class: "attempt-of muted small", text: `attempt ${attempt.attempt} of ${attempt.total}` }) : null,
    retry ? el("span", { class: "retry-at muted small", title: "the failed attempt's retry" }, "retry at ", timeEl(retry)) : null,
  ];
}

function reason(job) {
  const parts = [job.completion_reason || "—"];
  if (job.error_message) parts.push(el("span", { class: "why", title: job.error_message, text: job.error_message }));
  return parts;
}

export function fileLinks(job) {
  const links = [];
  const base = nodeBase(job);
  const log = logUrl(job, base);
  if (log) links.push(link(log, "Log", { target: "_blank", rel: "noopener" }));
  const items = itemsUrl(job, base);
  if (items) links.push(link(items, "Items", { target: "_blank", rel: "noopener" }));
  if (job.started_at) {
    links.push(link(errorsUrl(job, "csv"), "Errors", { class: "errors-csv", title: "Error report (CSV)" }));
  }
  return links.length ? links : "—";
}

/* The buttons a job's status allows; act(job, verb, button) with verb one
 * of resume, pause, cancel, force. None for read-only credentials. */
export function actions(job, act) {
  const buttons = [];
  if (!serves.actions) return el("div", { class: "buttons" }, buttons);
  const button = (className, verb, text, title) =>
    el("button", { type: "button", class: className, title, onclick: (e) => act(job, verb, e.currentTarget) }, text);
  if (job.status === "paused") {
    buttons.push(button("secondary resume", "resume", "Resume", "Queue it again: it goes on where it stopped"));
  } else if (job.status === "pending" || (job.status === "running" && job.pausable === true)) {
    const title = job.status === "pending" ? "Hold it out of the queue until it is resumed" : "Stop it, keeping its crawl state to resume later";
    buttons.push(button("secondary pause", "pause", "Pause", title));
  }
  if (["pending", "running", "pausing", "paused"].includes(job.status)) {
    buttons.push(button("danger cancel", "cancel", "Cancel"));
  } else if (job.status === "cancelling") {
    buttons.push(button("danger force", "force", "Force stop"));
  }
  return el("div", { class: "buttons" }, buttons);
}

/* The rows of the page's jobs, each rebuilt only when its job changed. */
export class JobTable {
  #rows = new Map(); // job id -> {key, tr}
  #spiders = new Set();

  /* open(job) opens a job's details; act as actions() takes it. */
  constructor({ open, act }) {
    this.open = open;
    this.act = act;
  }

  get size() {
    return this.#rows.size;
  }

  render(jobs, total, { offset }) {
    const body = $("jobs-body");
    const seen = new Set();
    let previous = null;
    for (const job of jobs) {
      // A row links to the files on the job's node, known from nodes.json.
      const key = `${JSON.stringify(job)} ${nodeBase(job)}`;
      let entry = this.#rows.get(job.job_id);
      if (!entry || entry.key !== key) {
        const tr = this.#row(job);
        if (entry) entry.tr.replaceWith(tr);
        entry = { key, tr };
        this.#rows.set(job.job_id, entry);
      }
      const wanted = previous ? previous.nextSibling : body.firstChild;
      if (wanted !== entry.tr) body.insertBefore(entry.tr, wanted);
      previous = entry.tr;
      seen.add(job.job_id);
    }
    for (const [id, entry] of this.#rows) {
      if (!seen.has(id)) {
        entry.tr.remove();
        this.#rows.delete(id);
      }
    }
    $("empty").hidden = jobs.length > 0;
    $("jobs").hidden = jobs.length === 0;
    $("range").textContent = total ? `${offset + 1}–${offset + jobs.length} of ${total}` : "0 jobs";
    $("newer").disabled = offset === 0;
    $("older").disabled = offset + jobs.length >= total;
    this.#noteSpiders(jobs);
  }

  #row(job) {
    return el(
      "tr",
      { class: `job status-${knownStatus(job.status)}`, dataset: { job: job.job_id, status: job.status } },
      cell("Job", el("button", { type: "button", class: "link job-id", title: "Progress details", onclick: () => this.open(job) }, job.job_id), "job"),
      cell("Spider", job.spider || "—", "spider"),
      cell("Node", job.node ? el("span", { title: job.node, text: job.node }) : "—", "node"),
      cell("Status", statusCell(job), "status"),
      cell("Progress", progressBar(job), "progress-cell"),
      cell("Pages", fmtInt(job.total_pages_crawled), "num pages"),
      cell("Documents", fmtInt(job.total_documents_found), "num documents"),
      cell("Failed", fmtInt(job.responses_failed), `num failed${job.responses_failed ? " bad" : ""}`),
      cell("Started", timeEl(job.started_at), "started"),
      cell("Running time", fmtDuration(job.is_active ? job.running_time : job.processing_time), "elapsed"),
      cell("Est. completion", eta(job), "eta"),
      cell("Reason", reason(job), "reason"),
      cell("Files", fileLinks(job), "files"),
      cell("Actions", actions(job, this.act), "actions"),
    );
  }

  /* The spider filter suggests the spiders seen so far. */
  #noteSpiders(jobs) {
    let added = false;
    for (const job of jobs) {
      if (job.spider && !this.#spiders.has(job.spider)) {
        this.#spiders.add(job.spider);
        added = true;
      }
    }
    if (added) $("spiders").replaceChildren(...[...this.#spiders].sort().map((name) => el("option", { value: name })));
  }
}
