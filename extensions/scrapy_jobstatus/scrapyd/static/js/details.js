/* The details panel of one job: read with the job list while it is open
 * (with the job's series and webhook log), drawn from what was read. */

import { NodeError, readJob, readWebhooks } from "./api.js";
import { chart } from "./chartview.js";
import { $, badge, el } from "./dom.js";
import { argumentTable, attemptLog, counters, deliveryLog, errorList, feedList, section, timeline, webhookSummary } from "./sections.js";
import { actions, attemptOf, fileLinks, progressBar } from "./table.js";

// Statuses a job never leaves. A paused job is not active, but it may be resumed.
const ENDED = new Set(["completed", "failed", "cancelled"]);
// The open job's counters over its whole run (jobstatus.json?series=1, at
// most 500 points) are read again this often while it runs, and at once on
// one of its events; in between, the chart goes on with the counters the
// job list's poll reads.
const SERIES_POLL_MS = 10000;
// A scrapyd.conf without webhooks.json: asked again now and then (a restart
// may add it), with no section and no error meanwhile.
const SERVICE_MISSING_POLL_MS = 60000;

function newJob(id, project) {
  return {
    job_id: id,
    project: project || null,
    doc: null,
    error: null,
    series: null, // the job's counters over its run, as jobstatus.json?series=1 gives them
    seriesAt: 0, // when they were read
    webhooks: null, // the job's webhook deliveries (webhooks.json); null: none to show
    webhooksAt: 0,
    changes: 0, // events of the job seen...
    seen: 0, // ...and how many of them the document read reflects
  };
}

export class Details {
  #job = null; // the open job, see newJob()
  #webhooksMissingUntil = 0; // webhooks.json answered 404 without JSON: not asked until then

  /* readings: the page's Readings of the jobs' counters; summary(id): the
   * job's row while its document is not read yet; act as actions() takes it. */
  constructor({ readings, summary, act }) {
    this.readings = readings;
    this.summary = summary;
    this.act = act;
  }

  /* The open job's id and project, or null. */
  get job() {
    return this.#job && { job_id: this.#job.job_id, project: this.#job.project };
  }

  show(id, project) {
    if (!this.#job || this.#job.job_id !== id) this.#job = newJob(id, project);
    $("details").hidden = false;
    document.body.classList.add("with-details");
    this.render();
  }

  close() {
    this.#job = null;
    $("details").hidden = true;
    document.body.classList.remove("with-details");
  }

  /* Events of the open job: its next read takes its series and webhook log anew. */
  noteEvents(events) {
    const job = this.#job;
    if (job && events.some((event) => event.job_id === job.job_id)) job.changes += 1;
  }

  /* A newer document of a job (a cancel's answer): shown at once if it is the open one's. */
  apply(doc) {
    if (this.#job && this.#job.job_id === doc.job_id) {
      this.#job.doc = doc;
      this.render();
    }
  }

  /* Reads the open job (signal aborted: what is read is not shown). */
  async load(signal) {
    const job = this.#job;
    if (!job) return;
    const current = () => !signal.aborted && this.#job === job;
    const changes = job.changes;
    const changed = changes !== job.seen;
    const { doc } = job;
    // A finished job does not change: read once, with its series, unless an
    // event says otherwise. A paused one may be resumed: it is read as it goes.
    if (!doc || !ENDED.has(doc.status) || changed || !job.seriesAt) {
      let withSeries = changed || !job.seriesAt || Date.now() - job.seriesAt >= SERIES_POLL_MS;
      let answer = await readJob(job, withSeries);
      if (!current()) return;
      const read = answer.ok && answer.data ? answer.data.job : null;
      if (read && !read.is_active && !withSeries && (!doc || doc.is_active)) {
        // It ended or paused since its series was read: once more, for the series' last points.
        withSeries = true;
        answer = await readJob(job, true);
        if (!current()) return;
      }
      if (answer.ok && answer.data && answer.data.job) {
        job.doc = answer.data.job;
        job.error = null;
        job.seen = changes;
        if (withSeries) {
          // A node older than the series answers without it: the chart makes do with the readings.
          job.series = Array.isArray(job.doc.series) ? job.doc.series : null;
          job.seriesAt = Date.now();
        }
        delete job.doc.series;
        this.readings.add(job.doc);
      } else if (answer.code === 404 || answer.code === 400) {
        job.error = (answer.data && answer.data.message) || `job ${job.job_id} not found`;
      } else {
        throw new NodeError(`the node answered HTTP ${answer.code}`);
      }
    }
    if (this.#wantsWebhooks(job, changed)) {
      await this.#loadWebhooks(job);
      if (!current()) return;
    }
    this.render();
  }

  /* The webhook log is read when the details open and on each of the job's
   * events (a status change is a delivery), and as often as the series while
   * the job runs or a delivery waits for a retry. */
  #wantsWebhooks(job, changed) {
    if (!job.doc || Date.now() < this.#webhooksMissingUntil) return false;
    if (!job.webhooksAt || changed) return true;
    const waiting = (job.webhooks || []).some((delivery) => delivery.status === "pending");
    return (job.doc.is_active || waiting) && Date.now() - job.webhooksAt >= SERIES_POLL_MS;
  }

  async #loadWebhooks(job) {
    const answer = await readWebhooks(job);
    job.webhooksAt = Date.now();
    if (answer.ok && answer.data && Array.isArray(answer.data.deliveries)) {
      job.webhooks = answer.data.deliveries;
    } else if (answer.code === 404) {
      job.webhooks = null;
      // Without JSON: a scrapyd.conf without the service (with JSON: an unknown job).
      if (!answer.data) this.#webhooksMissingUntil = Date.now() + SERVICE_MISSING_POLL_MS;
    }
  }

  render() {
    const job = this.#job;
    if (!job) return;
    const doc = job.doc || this.summary(job.job_id);
    $("details-title").replaceChildren(el("span", { class: "mono", text: job.job_id }), " ", doc ? badge(doc.status) : null);
    const parts = [];
    if (job.error) parts.push(el("p", { class: "error-message", text: job.error }));
    if (doc) {
      parts.push(el("p", { class: "message", text: doc.message || "" }));
      if (doc.error_message && !(doc.message || "").includes(doc.error_message)) {
        parts.push(el("p", { class: "error-message", text: doc.error_message }));
      }
      if (doc.warnings && doc.warnings.length) {
        parts.push(el("ul", { class: "warnings" }, doc.warnings.map((warning) => el("li", { text: warning }))));
      }
      parts.push(el("div", { class: "details-progress" }, progressBar(doc)));
      parts.push(el("div", { class: "details-actions" }, actions(doc, this.act), el("span", { class: "files" }, fileLinks(doc))));
      parts.push(section("Counters", counters(doc)));
      if (attemptOf(doc) && Array.isArray(doc.attempts) && doc.attempts.length) {
        parts.push(section(`Attempts (${doc.attempts.length})`, attemptLog(doc)));
      }
      parts.push(section("Pages per minute", chart(doc, job.series, this.readings.of(doc.job_id))));
      if (job.doc) {
        parts.push(section("History", timeline(doc)));
        if (Array.isArray(doc.feeds) && doc.feeds.length) {
          parts.push(section(`Feeds (${doc.feeds.length})`, feedList(doc)));
        }
        if (job.webhooks && job.webhooks.length) {
          parts.push(section(`Webhooks (${webhookSummary(job.webhooks)})`, deliveryLog(job.webhooks)));
        }
        parts.push(section(`Latest errors (${(doc.errors || []).length} of ${doc.error_count})`, errorList(doc)));
        parts.push(section("Spider arguments", argumentTable(doc)));
      } else {
        parts.push(el("p", { class: "muted", text: "Loading…" }));
      }
    }
    $("details-body").replaceChildren(...parts);
  }
}
