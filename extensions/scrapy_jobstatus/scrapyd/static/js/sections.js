/* The sections of the details panel: a job's counters, attempts, history,
 * feeds, webhook deliveries, errors and spider arguments. */

import { errorsUrl } from "./api.js";
import { badge, el, link, pageLink, timeEl } from "./dom.js";
import { fmtDuration, fmtInt, fmtPercent } from "./format.js";
import { attemptOf, eta, retryAt } from "./table.js";

// Statuses of a job whose crawl has run and may run on.
const CRAWLING = new Set(["running", "pausing", "paused"]);
const DELIVERY_STATUSES = ["pending", "delivered", "failed"];

export function section(title, ...content) {
  return el("section", { class: "block" }, el("h3", { text: title }), ...content);
}

export function counters(doc) {
  const attempt = attemptOf(doc);
  const rows = [
    ["Project", doc.project],
    ["Spider", doc.spider],
    ["Node", doc.node],
    ["Stage", doc.stage],
    ["Stages done", (doc.stages_completed || []).join(", ") || null],
    ["Progress", typeof doc.progress === "number" ? fmtPercent(doc.progress) : null],
    ["Attempt", attempt ? `${attempt.attempt} of ${attempt.total}` : null],
    ["Schedule", doc.schedule],
    ["Scheduled for", doc.scheduled_for ? timeEl(doc.scheduled_for) : null],
    ["Retry at", retryAt(doc) ? timeEl(retryAt(doc)) : null],
    // Whether its crawl has a JOBDIR: a running job without one cannot be paused.
    ["Pausable", typeof doc.pausable === "boolean" && CRAWLING.has(doc.status) ? (doc.pausable ? "yes" : "no") : null],
    ["Pages crawled", fmtInt(doc.total_pages_crawled)],
    ["Documents found", fmtInt(doc.total_documents_found)],
    ["Requests pending", fmtInt(doc.requests_pending)],
    ["Requests in flight", fmtInt(doc.requests_in_flight)],
    ["Failed responses", fmtInt(doc.responses_failed)],
    ["Failure ratio", typeof doc.failure_ratio === "number" ? `${(doc.failure_ratio * 100).toFixed(1)}%` : null],
    ["Errors", fmtInt(doc.error_count)],
    ["Current page", doc.current_page],
    ["Pagination complete", doc.pagination_complete === null || doc.pagination_complete === undefined ? null : doc.pagination_complete ? "yes" : "no"],
    ["Timeout", doc.timeout ? fmtDuration(doc.timeout) : "none"],
    ["Created", timeEl(doc.created_at)],
    ["Started", timeEl(doc.started_at)],
    ["Last heartbeat", timeEl(doc.updated_at)],
    ["Cancel requested", doc.cancel_requested_at ? timeEl(doc.cancel_requested_at) : null],
    ["Completed", doc.completed_at ? timeEl(doc.completed_at) : null],
    ["Est. completion", doc.is_active ? eta(doc) : null],
    [doc.is_active ? "Running time" : "Processing time", fmtDuration(doc.is_active ? doc.running_time : doc.processing_time)],
    ["Completion reason", doc.completion_reason],
    ["Close reason", doc.close_reason],
  ];
  return el(
    "dl",
    { class: "counters" },
    rows
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([name, value]) => el("div", {}, el("dt", { text: name }), el("dd", {}, value))),
  );
}

export function timeline(doc) {
  const events = doc.history || [];
  if (!events.length) return el("p", { class: "muted", text: "Nothing recorded yet." });
  return el(
    "ol",
    { class: "timeline" },
    events.map((event) =>
      el(
        "li",
        {},
        el("div", { class: "when" }, timeEl(event.timestamp)),
        el(
          "div",
          { class: "what" },
          el("span", { class: "step", text: event.step }),
          " ",
          badge(event.status),
          typeof event.duration_ms === "number"
            ? el("span", { class: "duration muted", title: "since the previous step", text: ` +${fmtDuration(event.duration_ms / 1000)}` })
            : null,
          event.details ? el("div", { class: "event-details", text: event.details }) : null,
        ),
      ),
    ),
  );
}

export function errorList(doc) {
  const errors = [...(doc.errors || [])].reverse();
  const reports = el(
    "p",
    { class: "reports" },
    "Full report: ",
    link(errorsUrl(doc, "csv"), "CSV", { class: "errors-csv" }),
    " · ",
    link(errorsUrl(doc, "json"), "JSON", { target: "_blank", rel: "noopener" }),
  );
  if (!errors.length) return [el("p", { class: "muted", text: "No errors." }), reports];
  return [
    el(
      "ul",
      { class: "errors" },
      errors.map((error) =>
        el(
          "li",
          {},
          el(
            "div",
            { class: "error-head" },
            timeEl(error.timestamp),
            " ",
            el("span", { class: "chip", text: error.error_type }),
            error.http_status ? el("span", { class: "chip", text: `HTTP ${error.http_status}` }) : null,
            error.stage ? el("span", { class: "muted small", text: ` stage ${error.stage}` }) : null,
            error.is_recoverable ? el("span", { class: "muted small", text: " · may succeed later" }) : null,
          ),
          el("div", { class: "error-message", text: error.error_message }),
          error.page_url ? pageLink(error.page_url) : null,
        ),
      ),
    ),
    reports,
  ];
}

/* Each attempt of a retried job, the current one last. */
export function attemptLog(doc) {
  return el(
    "ol",
    { class: "job-attempts" },
    doc.attempts.map((attempt) =>
      el(
        "li",
        { class: "job-attempt", dataset: { attempt: attempt.attempt } },
        el(
          "div",
          { class: "attempt-head" },
          el("span", { class: "attempt-number", text: `Attempt ${attempt.attempt}` }),
          " ",
          badge(attempt.status),
          attempt.completion_reason ? el("span", { class: "chip attempt-reason", text: attempt.completion_reason }) : null,
          attempt.node ? el("span", { class: "muted small attempt-node", title: attempt.node, text: `on ${attempt.node}` }) : null,
        ),
        el(
          "div",
          { class: "muted small attempt-times" },
          attempt.started_at ? ["started ", el("span", { class: "attempt-started" }, timeEl(attempt.started_at))] : "not started",
          attempt.ended_at ? [" · ended ", el("span", { class: "attempt-ended" }, timeEl(attempt.ended_at))] : null,
        ),
        attempt.error_message ? el("div", { class: "error-message attempt-message", text: attempt.error_message }) : null,
      ),
    ),
  );
}

/* The feeds each run of the job wrote (a paused and resumed job has one
 * entry per feed per run). A URI is text, never a link: it names a place
 * on the node or in storage, not a page for the browser. */
export function feedList(doc) {
  return el(
    "table",
    { class: "feeds" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col", text: "URI" }),
        el("th", { scope: "col", text: "Format" }),
        el("th", { scope: "col", class: "num", text: "Items" }),
        el("th", { scope: "col", class: "num", text: "Attempt" }),
        el("th", { scope: "col", text: "Closed" }),
      ),
    ),
    el(
      "tbody",
      {},
      doc.feeds.map((feed) =>
        el(
          "tr",
          { class: "feed" },
          el("td", {}, el("div", { class: "url feed-uri", title: feed.uri, text: feed.uri })),
          el("td", { class: "feed-format", text: feed.format || "—" }),
          el("td", { class: "num feed-items", text: fmtInt(feed.items) }),
          el("td", { class: "num feed-attempt", text: fmtInt(feed.attempt) }),
          el("td", { class: "feed-closed" }, timeEl(feed.closed_at)),
        ),
      ),
    ),
  );
}

export function webhookSummary(deliveries) {
  return DELIVERY_STATUSES.map((status) => [status, deliveries.filter((d) => d.status === status).length])
    .filter(([, count]) => count)
    .map(([status, count]) => `${count} ${status}`)
    .join(", ");
}

/* Each delivery of the job's webhooks, with its attempts. The URL (its
 * password redacted by the node) is text, never a link: the page does not
 * lead anyone to a receiver. */
export function deliveryLog(deliveries) {
  return el(
    "ul",
    { class: "deliveries" },
    deliveries.map((delivery) => {
      const status = DELIVERY_STATUSES.includes(delivery.status) ? delivery.status : "unknown";
      const attempts = Array.isArray(delivery.attempts) ? delivery.attempts : [];
      return el(
        "li",
        { class: `delivery delivery-${status}`, dataset: { event: delivery.event_id || "" } },
        el(
          "div",
          { class: "delivery-head" },
          el("span", { class: "chip event-type", text: delivery.type }),
          el("span", { class: `badge badge-${status}`, text: delivery.status || "unknown" }),
          el("span", { class: "muted small", text: ` ${attempts.length} ${attempts.length === 1 ? "attempt" : "attempts"}` }),
        ),
        el("div", { class: "url hook-url", title: delivery.url, text: delivery.url }),
        attempts.length
          ? el(
              "ol",
              { class: "attempts" },
              attempts.map((attempt) =>
                el(
                  "li",
                  { class: "attempt" },
                  timeEl(attempt.time),
                  " ",
                  attempt.http_status
                    ? el("span", { class: `chip http${attempt.http_status < 300 ? " ok" : ""}`, text: `HTTP ${attempt.http_status}` })
                    : null,
                  attempt.error ? el("span", { class: "attempt-error", text: attempt.error }) : null,
                  typeof attempt.duration_ms === "number" ? el("span", { class: "muted small", text: ` ${fmtInt(attempt.duration_ms)} ms` }) : null,
                  attempt.next_retry ? el("span", { class: "muted small retry" }, " · retry at ", timeEl(attempt.next_retry)) : null,
                ),
              ),
            )
          : null,
        delivery.status === "pending" && delivery.next_attempt_at
          ? el("div", { class: "muted small next-attempt" }, "Next attempt at ", timeEl(delivery.next_attempt_at))
          : null,
      );
    }),
  );
}

export function argumentTable(doc) {
  const args = Object.entries(doc.args || {});
  if (!args.length) return el("p", { class: "muted", text: "None." });
  return el(
    "table",
    { class: "args" },
    el("tbody", {}, args.map(([name, value]) => el("tr", {}, el("th", { scope: "row", text: name }), el("td", {}, el("div", { class: "value", text: typeof value === "string" ? value : JSON.stringify(value) }))))),
  );
}

