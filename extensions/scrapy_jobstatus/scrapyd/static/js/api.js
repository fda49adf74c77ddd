/* The node's services, read with relative URLs (jobs.json, jobstatus.json,
 * jobcancel.json, jobpause.json, jobresume.json, joberrors.json, nodes.json,
 * events.json, webhooks.json, the schedules' services, listprojects.json),
 * so the page's basic auth and path prefix apply. */

const TIMEOUT_MS = 10000;

/* What the node serves, as the page was told: Scrapyd's logs and items
 * folders, and the actions (read-only credentials: the node refuses cancel,
 * pause and resume). */
export const serves = {
  logs: document.body.dataset.logs === "1",
  items: document.body.dataset.items === "1",
  actions: document.body.dataset.role !== "viewer",
};

/* No answer within its time, or none at all. */
export class NodeError extends Error {}

/* The node answers, but not its job store (503): the node's own message. */
export class StoreDown extends NodeError {}

/* A service's answer: {code, ok, data (its JSON, or null), date (its Date
 * header)}; a NodeError if none came within timeoutMs (or options.signal
 * aborted the request). */
export async function call(url, options = {}, timeoutMs = TIMEOUT_MS) {
  const { signal, ...rest } = options;
  const controller = new AbortController();
  const abort = () => controller.abort();
  const timer = setTimeout(abort, timeoutMs);
  if (signal) signal.addEventListener("abort", abort);
  let response;
  try {
    response = await fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
      ...rest,
      signal: controller.signal,
    });
  } catch (error) {
    throw new NodeError(error.name === "AbortError" ? `no answer within ${Math.round(timeoutMs / 1000)} s` : "network error");
  } finally {
    clearTimeout(timer);
    if (signal) signal.removeEventListener("abort", abort);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { code: response.status, ok: response.ok, data, date: response.headers.get("Date") };
}

export function jobQuery(job, extra) {
  const params = new URLSearchParams({ job: job.job_id });
  if (job.project) params.set("project", job.project);
  for (const [name, value] of Object.entries(extra || {})) params.set(name, value);
  return params;
}

export function readJobs({ status, spider, schedule, limit, offset }) {
  const params = new URLSearchParams({ limit, offset });
  if (status) params.set("status", status);
  if (spider) params.set("spider", spider);
  if (schedule) params.set("schedule", schedule);
  return call(`jobs.json?${params}`);
}

/* A job's document; with its counters over its run (series=1) when asked. */
export function readJob(job, withSeries) {
  return call(`jobstatus.json?${jobQuery(job, withSeries ? { series: "1" } : {})}`);
}

export function readWebhooks(job) {
  return call(`webhooks.json?${jobQuery(job)}`);
}

/* Without since: the latest event's id, at once; with it, the events after
 * it, waited for up to waitS seconds. */
export function readEvents(since, waitS, signal) {
  const params = new URLSearchParams();
  if (since !== null) {
    params.set("since", since);
    params.set("wait", waitS);
  }
  const query = params.toString();
  return call(query ? `events.json?${query}` : "events.json", { signal }, waitS * 1000 + TIMEOUT_MS);
}

export function readNodes() {
  return call("nodes.json");
}

/* With each one's latest ticks when withHistory. */
export function readSchedules(withHistory) {
  return call(withHistory ? "listschedules.json?history=1" : "listschedules.json");
}

export function readProjects() {
  return call("listprojects.json");
}

/* A schedule added or replaced, run, or deleted (service: addschedule.json,
 * runschedule.json, delschedule.json). */
export function askSchedule(service, params) {
  return call(service, { method: "POST", body: new URLSearchParams(params) });
}

/* A cancel, pause or resume (service: jobcancel.json, ...). */
export function askJob(service, job, extra) {
  return call(service, { method: "POST", body: jobQuery(job, extra) });
}

export function errorsUrl(job, format) {
  return `joberrors.json?${jobQuery(job, { format })}`;
}

/* A crawl's log and items stay on the node that ran it: base is that
 * node's own address when it is another node of the cluster, "" otherwise. */
function crawlFileUrl(base, job, dir, extension) {
  const parts = [job.project, job.spider].map(encodeURIComponent).join("/");
  return `${base}${dir}/${parts}/${encodeURIComponent(job.job_id)}.${extension}`;
}

export function logUrl(job, base) {
  if (!serves.logs || !job.project || !job.spider || !job.started_at) return null;
  return crawlFileUrl(base, job, "logs", "log");
}

export function itemsUrl(job, base) {
  // Scrapyd writes the feed once items come.
  if (!serves.items || !job.project || !job.spider || !job.total_documents_found) return null;
  return crawlFileUrl(base, job, "items", "jl");
}
