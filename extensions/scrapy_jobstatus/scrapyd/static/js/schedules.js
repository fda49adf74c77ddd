/* The schedules panel: the periodic schedules of the store (listschedules.json),
 * each with its rule in words, its next run, its last run and that job's
 * status; with the node's own credentials, the buttons that enable or
 * disable one, run it now, edit or delete it, and the form that adds one. A
 * click on a schedule's name shows its jobs in the job list; its history
 * button, what each of its latest ticks did (fired, skipped, missed). Read
 * as often as the nodes, and at once after a change or a job event. */

import { NodeError, askSchedule, readSchedules, serves } from "./api.js";
import { $, badge, cell, el, timeEl } from "./dom.js";
import { fmtInt } from "./format.js";
import { Poll } from "./poll.js";
import { ruleInWords } from "./rule.js";
import { ScheduleForm } from "./scheduleform.js";

const SCHEDULES_POLL_MS = 5000;
// A scrapyd.conf without listschedules.json: no panel, and no error; asked again now and then.
const SERVICE_MISSING_POLL_MS = 60000;
const OUTCOMES = new Set(["fired", "skipped", "missed"]);

export class SchedulesPanel {
  #list = [];
  #rows = new Map(); // "project/name" -> {key, trs}: its row, and its history's when open
  #opened = false; // the panel was opened or closed once, by the page or by hand
  #histories = new Set(); // "project/name" of the schedules whose history is open

  /* filter(name): show the schedule's jobs in the job list; openJob(job):
   * open a job's details; notify(text, kind): the page's notice;
   * changed(): a schedule was run (the job list reads again). */
  constructor({ filter, openJob, notify, changed }) {
    this.filter = filter;
    this.openJob = openJob;
    this.notify = notify;
    this.changed = changed;
    this.poll = new Poll((signal) => this.#read(signal), { every: SCHEDULES_POLL_MS });
    this.form = new ScheduleForm({
      saved: (params) => {
        this.notify(`Schedule ${params.get("name")} saved.`, "info");
        this.poll.now();
      },
      exists: (project, name) => this.#list.some((schedule) => schedule.project === project && schedule.name === name),
    });
  }

  start() {
    $("schedules").addEventListener("toggle", () => {
      this.#opened = true;
    });
    $("schedule-add").hidden = !serves.actions;
    $("schedule-add").addEventListener("click", () => this.form.open(null));
    this.form.start();
    this.poll.now();
  }

  /* The schedules' names, for the job list's schedule filter. */
  get names() {
    return [...new Set(this.#list.map((schedule) => schedule.name))].sort();
  }

  async #read(signal) {
    let answer;
    try {
      // Their histories too while one is open.
      answer = await readSchedules(this.#histories.size > 0);
    } catch (error) {
      // Out of reach: the job list's poll says so; the panel keeps its last known state.
      if (!(error instanceof NodeError)) throw error;
      return undefined;
    }
    if (signal.aborted) return undefined;
    if (answer.code === 404 && !answer.data) {
      this.#list = [];
      $("schedules").hidden = true;
      return SERVICE_MISSING_POLL_MS;
    }
    if (answer.ok && answer.data && Array.isArray(answer.data.schedules)) {
      this.#list = answer.data.schedules;
      this.#render();
    }
    return undefined;
  }

  #render() {
    const list = this.#list;
    const body = $("schedules-body");
    const seen = new Set();
    let previous = null;
    for (const schedule of list) {
      const id = `${schedule.project}/${schedule.name}`;
      const open = this.#histories.has(id);
      const key = `${open} ${JSON.stringify(schedule)}`;
      let entry = this.#rows.get(id);
      if (!entry || entry.key !== key) {
        const trs = [this.#row(schedule, open)];
        if (open) trs.push(historyRow(schedule, (job) => this.openJob(job)));
        if (entry) entry.trs.forEach((tr) => tr.remove());
        entry = { key, trs };
        this.#rows.set(id, entry);
      }
      for (const tr of entry.trs) {
        const wanted = previous ? previous.nextSibling : body.firstChild;
        if (wanted !== tr) body.insertBefore(tr, wanted);
        previous = tr;
      }
      seen.add(id);
    }
    for (const [id, entry] of this.#rows) {
      if (!seen.has(id)) {
        entry.trs.forEach((tr) => tr.remove());
        this.#rows.delete(id);
        this.#histories.delete(id);
      }
    }
    const enabled = list.filter((schedule) => schedule.enabled !== false).length;
    $("schedules-summary").textContent = list.length ? `${list.length} ${list.length === 1 ? "schedule" : "schedules"}, ${enabled} enabled` : "none";
    $("schedules-empty").hidden = list.length > 0;
    $("schedule-names").replaceChildren(...this.names.map((name) => el("option", { value: name })));
    const panel = $("schedules");
    // Open at first when there is something to see.
    if (!this.#opened) panel.open = list.length > 0;
    panel.hidden = false;
  }

  #row(schedule, historyOpen) {
    const enabled = schedule.enabled !== false;
    const rule = ruleInWords(schedule);
    const written = typeof schedule.every === "number" ? `every=${schedule.every}` : `${schedule.cron} (${schedule.timezone || "UTC"})`;
    return el(
      "tr",
      {
        class: `schedule-row${enabled ? "" : " disabled"}`,
        dataset: { schedule: schedule.name, project: schedule.project || "", enabled: String(enabled) },
      },
      cell(
        "Schedule",
        [
          el(
            "button",
            { type: "button", class: "link schedule-name", title: "Show its jobs", onclick: () => this.filter(schedule.name) },
            schedule.name,
          ),
          enabled ? null : [" ", el("span", { class: "chip off", text: "disabled" })],
          el("span", { class: "project muted small", text: schedule.project || "" }),
        ],
        "name",
      ),
      cell("Spider", schedule.spider || "—", "spider"),
      cell("Rule", el("span", { title: written, text: rule }), "rule"),
      cell("Next run", enabled ? timeEl(schedule.next_tick) : el("span", { class: "muted", text: "disabled" }), "next"),
      cell("Last run", this.#lastRun(schedule), "last"),
      cell("Skipped / missed", [`${fmtInt(schedule.skipped)} / ${fmtInt(schedule.missed)} `, this.#historyButton(schedule, historyOpen)], "num ticks"),
      cell("Actions", this.#buttons(schedule, enabled), "actions"),
    );
  }

  /* A read: a viewer has it too. */
  #historyButton(schedule, open) {
    const id = `${schedule.project}/${schedule.name}`;
    const toggle = () => {
      if (this.#histories.has(id)) this.#histories.delete(id);
      else this.#histories.add(id);
      this.#render();
      this.poll.now();
    };
    const attrs = { type: "button", class: "link history", "aria-expanded": String(open), onclick: toggle };
    return el("button", attrs, open ? "Hide history" : "History");
  }

  #lastRun(schedule) {
    if (!schedule.last_job) return schedule.last_tick ? timeEl(schedule.last_tick) : "—";
    return [
      schedule.last_job_status ? badge(schedule.last_job_status) : null,
      " ",
      jobLink({ job_id: schedule.last_job, project: schedule.project }, "last-job", (job) => this.openJob(job)),
      schedule.last_tick ? el("span", { class: "muted small tick" }, timeEl(schedule.last_tick)) : null,
    ];
  }

  /* None for read-only credentials, as the job list's. */
  #buttons(schedule, enabled) {
    const buttons = [];
    if (serves.actions) {
      const button = (className, text, title, onclick) => el("button", { type: "button", class: className, title, onclick: (e) => onclick(e.currentTarget) }, text);
      buttons.push(
        button("secondary toggle", enabled ? "Disable" : "Enable", enabled ? "No more ticks until enabled" : "Tick again", (b) => this.#toggle(schedule, b)),
        button("secondary run", "Run now", "A job now, besides the ticks", (b) => this.#run(schedule, b)),
        button("secondary edit", "Edit", null, () => this.form.open(schedule)),
        button("danger delete", "Delete", "Remove the schedule; its jobs stay", (b) => this.#delete(schedule, b)),
      );
    }
    return el("div", { class: "buttons" }, buttons);
  }

  /* addschedule.json with the project, name and enabled alone switches a schedule, its definition kept. */
  async #toggle(schedule, button) {
    const params = { project: schedule.project, name: schedule.name, enabled: schedule.enabled === false ? "1" : "0" };
    const data = await this.#ask("addschedule.json", params, button, schedule.enabled === false ? "enable" : "disable");
    if (data) this.notify(`Schedule ${schedule.name} ${schedule.enabled === false ? "enabled" : "disabled"}.`, "info");
  }

  async #run(schedule, button) {
    const data = await this.#ask("runschedule.json", { project: schedule.project, name: schedule.name }, button, "run");
    if (data) {
      this.notify(`Schedule ${schedule.name}: job ${data.jobid} queued.`, "info");
      this.changed();
    }
  }

  async #delete(schedule, button) {
    if (!window.confirm(`Delete schedule ${schedule.name}?\n\nNo more jobs are started for it; its jobs so far stay.`)) return;
    const data = await this.#ask("delschedule.json", { project: schedule.project, name: schedule.name }, button, "delete");
    if (data) this.notify(`Schedule ${schedule.name} deleted.`, "info");
  }

  /* A schedule service's answer: its JSON once the node did it, null
   * (its refusal shown) otherwise. The panel is read again either way. */
  async #ask(service, params, button, verb) {
    button.disabled = true;
    let answer;
    try {
      answer = await askSchedule(service, params);
    } catch (error) {
      if (!(error instanceof NodeError)) throw error;
      button.disabled = false;
      this.notify(`Could not ${verb} the schedule: ${error.message}.`, "error");
      return null;
    }
    const data = answer.data || {};
    const done = answer.ok && data.status === "ok";
    if (!done) {
      button.disabled = false;
      this.notify(data.message || `Could not ${verb} the schedule: HTTP ${answer.code}.`, "error");
    }
    this.poll.now();
    return done ? data : null;
  }
}

/* A link to a job's details, in the page's address too (open it in a new tab). */
function jobLink(job, className, openJob) {
  const href = `#${new URLSearchParams({ job: job.job_id, project: job.project || "" })}`;
  const open = (event) => {
    if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    openJob(job);
  };
  return el("a", { href, class: `${className} mono`, title: `${job.job_id}: progress details`, onclick: open }, job.job_id);
}

/* A schedule's latest ticks, newest first: fired (its job), skipped (its
 * previous job still active), or missed (how many, up to that tick). */
function historyRow(schedule, openJob) {
  const lines = schedule.history;
  let content;
  if (!Array.isArray(lines)) content = el("p", { class: "muted", text: "Loading…" });
  else if (!lines.length) content = el("p", { class: "muted", text: "No tick yet." });
  else {
    content = el(
      "ol",
      { class: "ticks" },
      lines.map((line) =>
        el(
          "li",
          { class: `tick-line outcome-${OUTCOMES.has(line.outcome) ? line.outcome : "other"}` },
          timeEl(line.tick),
          el("span", { class: "chip outcome", text: line.count > 1 ? `${line.outcome} ×${line.count}` : line.outcome || "" }),
          line.job_id ? jobLink({ job_id: line.job_id, project: schedule.project }, "tick-job", openJob) : null,
          line.node ? el("span", { class: "muted small", text: `on ${line.node}` }) : null,
          line.details ? el("span", { class: "tick-details muted small", text: line.details }) : null,
        ),
      ),
    );
  }
  const td = el("td", { colspan: 7 }, el("h3", { text: "History" }), content);
  return el("tr", { class: "schedule-history", dataset: { schedule: schedule.name, project: schedule.project || "" } }, td);
}
