/* The form that adds a periodic schedule or edits one (addschedule.json
 * creates or replaces a schedule by its name). What the node refuses is
 * shown as its one-line message, above the form, with what was typed kept. */

import { NodeError, askSchedule, readProjects } from "./api.js";
import { $, el } from "./dom.js";
import { ruleInWords } from "./rule.js";

const OPTIONAL = ["priority", "retries", "timeout", "starting_deadline"];
// addschedule.json's own parameters: a spider argument of one of these names would be taken for it.
const OWN = new Set(["project", "name", "spider", "cron", "timezone", "every", "enabled", "overlap", "catch_up", "setting", "webhook", "webhook_secret", "jobid", ...OPTIONAL]);

/* "name=value" lines as [name, value] pairs; blank lines and "#" comments
 * left out; an Error naming the first line without "=". */
export function readPairs(text, what) {
  const pairs = [];
  text.split("\n").forEach((line, index) => {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith("#")) return;
    const at = trimmed.indexOf("=");
    if (at < 1) throw new Error(`${what}, line ${index + 1}: write it as name=value`);
    pairs.push([trimmed.slice(0, at).trim(), trimmed.slice(at + 1).trim()]);
  });
  return pairs;
}

export class ScheduleForm {
  #editing = null; // the schedule being edited; null: a new one
  #zones = false; // the time zone list is filled

  /* saved(params, answer) once the node took the schedule; exists(project,
   * name) whether the panel lists one of that name. */
  constructor({ saved, exists }) {
    this.saved = saved;
    this.exists = exists;
  }

  start() {
    const form = $("schedule-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#submit();
    });
    form.addEventListener("input", () => this.#showRule());
    form.addEventListener("change", () => this.#showRule());
    $("schedule-form-cancel").addEventListener("click", () => this.close());
  }

  /* The form for a new schedule (null), or filled with one to edit. */
  open(schedule) {
    const form = $("schedule-form");
    form.reset();
    this.#editing = schedule;
    const fields = form.elements;
    $("schedule-form-title").textContent = schedule ? `Edit schedule ${schedule.name}` : "Add a schedule";
    fields.name.readOnly = fields.project.readOnly = Boolean(schedule);
    if (schedule) this.#fill(schedule);
    this.#error(null);
    // Its receivers' keys are never shown, so the form cannot send them again.
    const hooks = schedule && Array.isArray(schedule.webhooks) ? schedule.webhooks.length : 0;
    $("schedule-form-note").textContent = hooks ? `Saving drops its ${hooks === 1 ? "webhook" : `${hooks} webhooks`}: give them again through addschedule.json.` : "";
    $("schedule-form-note").hidden = !hooks;
    this.#showRule();
    form.hidden = false;
    this.#lists();
    (schedule ? fields.spider : fields.name).focus();
  }

  close() {
    this.#editing = null;
    $("schedule-form").hidden = true;
  }

  #fill(schedule) {
    const fields = $("schedule-form").elements;
    fields.name.value = schedule.name;
    fields.project.value = schedule.project || "";
    fields.spider.value = schedule.spider || "";
    const byEvery = typeof schedule.every === "number";
    fields.kind.value = byEvery ? "every" : "cron";
    fields.cron.value = byEvery ? "" : schedule.cron || "";
    fields.timezone.value = byEvery ? "" : schedule.timezone || "";
    fields.every.value = byEvery ? schedule.every : "";
    fields.overlap.value = schedule.overlap || "allow";
    fields.catch_up.value = schedule.catch_up || "none";
    for (const name of OPTIONAL) fields[name].value = schedule[name] ?? "";
    fields.enabled.checked = schedule.enabled !== false;
    fields.args.value = Object.entries(schedule.args || {})
      .map(([name, value]) => `${name}=${value}`)
      .join("\n");
    // The timeout is its own field (the node keeps it as the job's JOBSTATUS_TIMEOUT too).
    fields.settings.value = Object.entries(schedule.settings || {})
      .filter(([name]) => !(name === "JOBSTATUS_TIMEOUT" && schedule.timeout !== null && schedule.timeout !== undefined))
      .map(([name, value]) => `${name}=${value}`)
      .join("\n");
  }

  /* The form's fields as addschedule.json's parameters; an Error for what
   * the page can tell is wrong before asking (the node checks the rest). */
  #params() {
    const fields = $("schedule-form").elements;
    const params = new URLSearchParams();
    for (const name of ["name", "project", "spider"]) {
      const value = fields[name].value.trim();
      if (!value) throw new Error(`The ${name} is missing.`);
      params.set(name, value);
    }
    const byEvery = fields.kind.value === "every";
    const rule = byEvery ? fields.every.value.trim() : fields.cron.value.trim();
    if (!rule) throw new Error(byEvery ? "Every how many seconds?" : "The cron rule is missing.");
    params.set(byEvery ? "every" : "cron", rule);
    if (!byEvery && fields.timezone.value.trim()) params.set("timezone", fields.timezone.value.trim());
    params.set("enabled", fields.enabled.checked ? "1" : "0");
    params.set("overlap", fields.overlap.value);
    params.set("catch_up", fields.catch_up.value);
    for (const name of OPTIONAL) {
      if (fields[name].value.trim()) params.set(name, fields[name].value.trim());
    }
    for (const [name, value] of readPairs(fields.args.value, "Spider arguments")) {
      if (OWN.has(name) || name.startsWith("_")) throw new Error(`Spider arguments: "${name}" is a parameter of the schedule itself, not the spider's`);
      params.append(name, value);
    }
    for (const [name, value] of readPairs(fields.settings.value, "Settings")) params.append("setting", `${name}=${value}`);
    // What the form does not show is kept: the egg version the schedule runs.
    if (this.#editing && this.#editing.version) params.set("_version", this.#editing.version);
    return params;
  }

  async #submit() {
    let params;
    try {
      params = this.#params();
    } catch (error) {
      this.#error(error.message);
      return;
    }
    // A new schedule of a name already used replaces that one: asked first.
    const [project, name] = [params.get("project"), params.get("name")];
    if (!this.#editing && this.exists(project, name) && !window.confirm(`Schedule ${name} exists in ${project}.\n\nReplace it?`)) return;
    const button = $("schedule-form").querySelector('button[type="submit"]');
    button.disabled = true;
    let answer;
    try {
      answer = await askSchedule("addschedule.json", params);
    } catch (error) {
      if (!(error instanceof NodeError)) throw error;
      this.#error(`Not saved: ${error.message}.`);
      return;
    } finally {
      button.disabled = false;
    }
    const data = answer.data || {};
    if (answer.ok && data.status === "ok") {
      this.close();
      this.saved(params, data);
    } else {
      // The node's one line; the form keeps what was typed.
      this.#error(data.message || `Not saved: the node answered HTTP ${answer.code}.`);
    }
  }

  #error(message) {
    const line = $("schedule-form-error");
    line.textContent = message || "";
    line.hidden = !message;
  }

  /* The rule as the panel will say it, under the fields. */
  #showRule() {
    const fields = $("schedule-form").elements;
    const byEvery = fields.kind.value === "every";
    for (const label of document.querySelectorAll("#schedule-form .by-cron")) label.hidden = byEvery;
    for (const label of document.querySelectorAll("#schedule-form .by-every")) label.hidden = !byEvery;
    const every = Number(fields.every.value);
    const words = byEvery
      ? fields.every.value && every > 0
        ? ruleInWords({ every })
        : ""
      : fields.cron.value.trim() && ruleInWords({ cron: fields.cron.value, timezone: fields.timezone.value.trim() });
    $("schedule-rule-words").textContent = words ? `: ${words}` : "";
  }

  /* The projects deployed (listprojects.json) and the time zones this
   * browser knows, suggested; one project is filled in. */
  async #lists() {
    if (!this.#zones && typeof Intl.supportedValuesOf === "function") {
      this.#zones = true;
      $("timezones").replaceChildren(...["UTC", ...Intl.supportedValuesOf("timeZone")].map((zone) => el("option", { value: zone })));
    }
    let answer;
    try {
      answer = await readProjects();
    } catch (error) {
      if (!(error instanceof NodeError)) throw error;
      return;
    }
    const projects = answer.ok && answer.data && Array.isArray(answer.data.projects) ? answer.data.projects : [];
    $("projects").replaceChildren(...projects.map((project) => el("option", { value: project })));
    const field = $("schedule-form").elements.project;
    if (projects.length === 1 && !field.value && !this.#editing) field.value = projects[0];
  }
}
