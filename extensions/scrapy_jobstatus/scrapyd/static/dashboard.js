/* The jobs dashboard of a Scrapyd node: the page's main module, served as
 * dashboard/app.js, which loads the others from dashboard/js/ (native ES
 * modules, no build step). It reads the job list, follows the node's
 * events, keeps the filters and the open job in the page's address, and
 * asks the node to cancel, pause or resume a job; its schedules panel
 * (js/schedules.js) manages the periodic schedules. The page's
 * Content-Security-Policy lets no other script run. */

import { NodeError, StoreDown, askJob, readJobs } from "./js/api.js";
import { Readings } from "./js/chart.js";
import { Details } from "./js/details.js";
import { $, el } from "./js/dom.js";
import { EVENTS_GAP_MS, EventStream } from "./js/events.js";
import { STATUSES, fmtTime } from "./js/format.js";
import { nodesPoll, startNodes } from "./js/nodes.js";
import { Poll } from "./js/poll.js";
import { SchedulesPanel } from "./js/schedules.js";
import { JobTable } from "./js/table.js";

const POLL_MS = 2000;
const NAME = /^[A-Za-z0-9_.-]{1,128}$/;
const SCHEDULE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;
const DEFAULT_LIMIT = 20;

const page = {
  filters: { status: "", spider: "", schedule: "", limit: DEFAULT_LIMIT, offset: 0 },
  jobs: [],
  total: 0,
  failingSince: null,
};
const readings = new Readings();
const table = new JobTable({ open: openDetails, act });
const details = new Details({ readings, act, summary: (id) => page.jobs.find((job) => job.job_id === id) });
const jobsPoll = new Poll(readJobList, { every: POLL_MS, gap: EVENTS_GAP_MS });
const schedules = new SchedulesPanel({
  filter: filterBySchedule,
  openJob: openDetails,
  notify: showNotice,
  changed: () => jobsPoll.soon(),
});
const events = new EventStream({
  onEvents: (list) => {
    details.noteEvents(list);
    jobsPoll.soon();
    // A schedule's last job moved.
    schedules.poll.soon();
  },
  onState: setEvents,
  onMissed: () => {
    // Events were pruned before they were read: the list and the open job anew.
    details.noteEvents(details.job ? [details.job] : []);
    jobsPoll.now();
  },
});

// -- the job list ------------------------------------------------------------

function refresh() {
  if (document.hidden) setLive("paused");
  jobsPoll.now();
}

async function readJobList(signal) {
  try {
    const answer = await readJobs(page.filters);
    if (signal.aborted) return undefined;
    if (answer.code === 401) throw new NodeError("the node asks for credentials: reload the page to sign in");
    if (answer.code === 503) throw new StoreDown((answer.data && answer.data.message) || "the job store is unreachable");
    if (answer.code === 400 && answer.data && answer.data.message) {
      setReachable();
      showNotice(answer.data.message, "error");
      return undefined;
    }
    if (!answer.ok || !answer.data || !Array.isArray(answer.data.jobs)) {
      throw new NodeError(`the node answered HTTP ${answer.code}`);
    }
    page.jobs = answer.data.jobs;
    page.total = answer.data.total;
    const { filters } = page;
    if (page.jobs.length === 0 && filters.offset > 0 && page.total > 0) {
      // The page is past the end (jobs were pruned): show the last one.
      filters.offset = Math.floor((page.total - 1) / filters.limit) * filters.limit;
      writeHash();
      return 0;
    }
    page.jobs.forEach((job) => readings.add(job));
    renderTable();
    await details.load(signal);
    if (signal.aborted) return undefined;
    setReachable();
  } catch (error) {
    if (signal.aborted) return undefined;
    if (!(error instanceof NodeError)) throw error;
    setUnreachable(error);
  }
  return undefined;
}

function renderTable() {
  table.render(page.jobs, page.total, page.filters);
}

// -- what the page says of the node --------------------------------------------

function setLive(mode, text) {
  const live = $("live");
  live.dataset.mode = mode;
  if (mode === "live") live.textContent = `Live · updated ${fmtTime(new Date().toISOString())}`;
  else if (mode === "paused") live.textContent = "Paused while the tab is hidden";
  else live.textContent = text || "Offline";
}

function setEvents(on) {
  const live = $("live");
  live.dataset.events = on ? "on" : "off";
  live.title = on ? `Updated on each job event (events.json), and every ${POLL_MS / 1000} s` : `Updated every ${POLL_MS / 1000} s`;
}

function setReachable() {
  page.failingSince = null;
  $("alert").hidden = true;
  document.body.classList.remove("stale");
  setLive("live");
}

/* The node, or only its job store (the node answers 503 with its reason). */
function setUnreachable(error) {
  page.failingSince = page.failingSince || new Date();
  const alert = $("alert");
  const what = error instanceof StoreDown ? "The node's job store is unreachable" : "The node is unreachable";
  alert.replaceChildren(
    el("strong", { text: what }),
    ` since ${fmtTime(page.failingSince.toISOString())} (${error.message}). `,
    `Retrying every ${POLL_MS / 1000} s; the table shows the last known state.`,
  );
  alert.hidden = false;
  document.body.classList.add("stale");
  setLive("offline", "Offline");
}

function showNotice(text, kind) {
  $("notice-text").textContent = text;
  $("notice").dataset.kind = kind || "info";
  $("notice").hidden = false;
}

// -- cancel, pause, resume -------------------------------------------------------

const CANCEL_OUTCOMES = {
  pending: "It is taken out of the queue and never starts.",
  paused: "It is never resumed: its saved crawl state is removed.",
};

/* A job's button pressed. A cancel is asked first; a pending job is paused
 * at once, a running one once its in-flight requests are done (pausing),
 * its crawl state kept: nothing is lost, so nothing is asked; a paused job
 * goes back to the queue, and goes on where it stopped. */
async function act(job, verb, button) {
  if (verb === "cancel" || verb === "force") {
    const question =
      verb === "force"
        ? `Force stop job ${job.job_id}?\n\nIn-flight requests are dropped now: their results may be lost.`
        : `Cancel job ${job.job_id}?\n\n${
            CANCEL_OUTCOMES[job.status] || "No new requests are sent; in-flight requests finish and their results are kept."
          }`;
    if (!window.confirm(question)) return;
    await askNode(job, "jobcancel.json", verb === "force" ? { force: "1" } : {}, button, "cancel");
  } else {
    await askNode(job, `job${verb}.json`, {}, button, verb);
  }
}

/* A job service's answer to a cancel, pause or resume request: the job's
 * new document shown at once, or the node's refusal. */
async function askNode(job, service, extra, button, verb) {
  if (button) button.disabled = true;
  let answer;
  try {
    answer = await askJob(service, job, extra);
  } catch (error) {
    if (button) button.disabled = false;
    showNotice(`Could not ${verb} job ${job.job_id}: ${error.message}.`, "error");
    return;
  }
  const data = answer.data || {};
  if (data.job) applyDocument(data.job);
  if (answer.code === 200 || answer.code === 202) {
    showNotice(`Job ${job.job_id}: ${data.job ? data.job.status : `${verb} requested`}.`, "info");
  } else {
    if (button) button.disabled = false;
    showNotice(data.message || `Could not ${verb} job ${job.job_id}: HTTP ${answer.code}.`, "error");
  }
  refresh();
}

/* A job's newer document (from a cancel's answer): shown at once. */
function applyDocument(doc) {
  const index = page.jobs.findIndex((job) => job.job_id === doc.job_id);
  if (index >= 0) {
    page.jobs[index] = { ...doc, errors: [], history: [], error_count: 0, has_errors: false };
    renderTable();
  }
  readings.add(doc);
  details.apply(doc);
}

// -- the details panel ---------------------------------------------------------

function openDetails(job) {
  details.show(job.job_id, job.project);
  writeHash();
  $("details-close").focus();
  refresh();
}

function closeDetails() {
  details.close();
  writeHash();
}

// -- filters, paging, location -------------------------------------------------

function readHash() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const status = params.get("status") || "";
  const spider = params.get("spider") || "";
  const schedule = params.get("schedule") || "";
  const limit = Number.parseInt(params.get("limit"), 10);
  const offset = Number.parseInt(params.get("offset"), 10);
  const { filters } = page;
  filters.status = STATUSES.includes(status) ? status : "";
  filters.spider = NAME.test(spider) ? spider : "";
  filters.schedule = SCHEDULE.test(schedule) ? schedule : "";
  filters.limit = limit >= 1 && limit <= 1000 ? limit : DEFAULT_LIMIT;
  filters.offset = offset > 0 ? offset : 0;
  $("filter-status").value = filters.status;
  $("filter-spider").value = filters.spider;
  $("filter-schedule").value = filters.schedule;
  const sizes = $("filter-limit");
  if (![...sizes.options].some((option) => option.value === String(filters.limit))) {
    sizes.append(el("option", { text: String(filters.limit) }));
  }
  sizes.value = String(filters.limit);
  const job = params.get("job");
  const open = details.job;
  if (job && (!open || open.job_id !== job)) details.show(job, params.get("project"));
  else if (!job && open) closeDetails();
}

function writeHash() {
  const params = new URLSearchParams();
  const { status, spider, schedule, limit, offset } = page.filters;
  if (status) params.set("status", status);
  if (spider) params.set("spider", spider);
  if (schedule) params.set("schedule", schedule);
  if (limit !== DEFAULT_LIMIT) params.set("limit", limit);
  if (offset) params.set("offset", offset);
  const open = details.job;
  if (open) {
    params.set("job", open.job_id);
    if (open.project) params.set("project", open.project);
  }
  const hash = params.toString();
  history.replaceState(null, "", hash ? `#${hash}` : window.location.pathname + window.location.search);
}

function applyFilters() {
  const spiderInput = $("filter-spider");
  const spider = spiderInput.value.trim();
  if (spider && !NAME.test(spider)) {
    spiderInput.setCustomValidity("A spider name: letters, digits, '_', '.' or '-'");
    spiderInput.reportValidity();
    return;
  }
  spiderInput.setCustomValidity("");
  const scheduleInput = $("filter-schedule");
  const schedule = scheduleInput.value.trim();
  if (schedule && !SCHEDULE.test(schedule)) {
    scheduleInput.setCustomValidity("A schedule's name: letters, digits, '_', '.' or '-'");
    scheduleInput.reportValidity();
    return;
  }
  scheduleInput.setCustomValidity("");
  const { filters } = page;
  const status = $("filter-status").value;
  const limit = Number($("filter-limit").value);
  const same = spider === filters.spider && schedule === filters.schedule;
  if (same && status === filters.status && limit === filters.limit) return;
  Object.assign(filters, { status, spider, schedule, limit, offset: 0 });
  writeHash();
  refresh();
}

/* A schedule's name clicked in its panel: the job list shows its jobs. */
function filterBySchedule(name) {
  $("filter-schedule").value = name;
  applyFilters();
  $("filters").scrollIntoView({ block: "nearest" });
}

function turnPage(direction) {
  const { filters } = page;
  filters.offset = Math.max(0, filters.offset + direction * filters.limit);
  writeHash();
  refresh();
}

// -- start ---------------------------------------------------------------------

function start() {
  let typing = null;
  const filters = $("filters");
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });
  filters.addEventListener("change", applyFilters);
  for (const id of ["filter-spider", "filter-schedule"]) {
    $(id).addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(applyFilters, 400);
    });
  }
  filters.addEventListener("reset", (event) => {
    event.preventDefault();
    $("filter-status").value = "";
    $("filter-spider").value = "";
    $("filter-schedule").value = "";
    $("filter-limit").value = String(DEFAULT_LIMIT);
    applyFilters();
  });
  $("newer").addEventListener("click", () => turnPage(-1));
  $("older").addEventListener("click", () => turnPage(1));
  $("details-close").addEventListener("click", closeDetails);
  $("notice-close").addEventListener("click", () => {
    $("notice").hidden = true;
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && details.job) closeDetails();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      // Answers on their way are not shown.
      jobsPoll.stop();
      nodesPoll.stop();
      schedules.poll.stop();
      events.stop();
      setLive("paused");
    } else {
      refresh();
      nodesPoll.now();
      schedules.poll.now();
      events.start();
    }
  });
  window.addEventListener("hashchange", () => {
    readHash();
    refresh();
  });
  readHash();
  refresh();
  // Rows whose node's address is known now link to it.
  startNodes(() => {
    if (table.size) renderTable();
  });
  schedules.start();
  events.start();
}

start();
