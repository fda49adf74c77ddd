/* The jobs dashboard of a Scrapyd node.
 *
 * Reads the node's job services with relative URLs (jobs.json, jobstatus.json,
 * jobcancel.json, jobpause.json, jobresume.json, joberrors.json, nodes.json,
 * events.json, webhooks.json), so the page's basic auth and path prefix
 * apply. Everything shown comes from crawled sites, spiders, users or other
 * nodes: it is put in the page as text (textContent, attributes), never
 * parsed as HTML, and the page's Content-Security-Policy lets no other
 * script run.
 */
"use strict";

(() => {
  const POLL_MS = 2000;
  // Nodes record a heartbeat every 5 s: the nodes panel is read as often.
  const NODES_POLL_MS = 5000;
  // An older scrapyd.conf has no nodes.json: it is asked again now and then,
  // with no panel and no error meanwhile.
  const NODES_MISSING_POLL_MS = 60000;
  const MAX_CLOCK_SKEW_MS = 2000;
  const TIMEOUT_MS = 10000;
  const STATUSES = ["pending", "running", "pausing", "paused", "cancelling", "finalizing", "completed", "failed", "cancelled"];
  // Statuses in which a crawl is moving: their bars animate when progress is unknown.
  const MOVING = new Set(["running", "pausing", "cancelling", "finalizing"]);
  // Statuses a job never leaves. A paused job is not active, but it may be resumed.
  const ENDED = new Set(["completed", "failed", "cancelled"]);
  // Statuses of a job whose crawl has run and may run on.
  const CRAWLING = new Set(["running", "pausing", "paused"]);
  const NAME = /^[A-Za-z0-9_.-]{1,128}$/;
  const SVG = "http://www.w3.org/2000/svg";
  // A chart step's rate is measured when the counter readings around it are at
  // most a step (or this) apart; otherwise it is an average over a longer gap.
  const MEASURED_GAP_MS = 5000;
  // Below this, a rate per minute says nothing.
  const MIN_CHART_MS = 10000;
  const MAX_SAMPLES = 2000;
  const MAX_SAMPLED_JOBS = 500;
  // The open job's counters over its whole run (jobstatus.json?series=1, at
  // most 500 points) are read again this often while it runs, and at once on
  // one of its events; in between, the chart goes on with the counters the
  // 2 s poll reads.
  const SERIES_POLL_MS = 10000;
  // events.json is a long poll: asked to wait this long for the next event.
  const EVENTS_WAIT_S = 25;
  // However many events come, at most one long poll and one refresh this often.
  const EVENTS_GAP_MS = 250;
  const EVENTS_RETRY_MS = 5000;
  // A scrapyd.conf without events.json or webhooks.json: asked again now and
  // then (a restart may add it), with plain polling, no panel and no error meanwhile.
  const SERVICE_MISSING_POLL_MS = 60000;

  const $ = (id) => document.getElementById(id);
  const serves = {
    logs: document.body.dataset.logs === "1",
    items: document.body.dataset.items === "1",
    // Read-only credentials: the node refuses cancel, pause and resume.
    actions: document.body.dataset.role !== "viewer",
  };

  const state = {
    filters: { status: "", spider: "", limit: 20, offset: 0 },
    jobs: [],
    total: 0,
    rows: new Map(), // job id -> {key, tr}
    details: null, // see newDetails()
    samples: new Map(), // job id -> [[time ms, pages crawled, documents found, failed responses], ...]
    spiders: new Set(),
    timer: null,
    generation: 0,
    refreshing: 0, // the generation of the refresh under way, if any
    again: false, // an event came during that refresh: another one at once after it
    refreshedAt: 0,
    failingSince: null,
    webhooksMissingUntil: 0, // webhooks.json answered 404 without JSON: not asked until then
    events: {
      on: false, // events.json answers: the page refreshes on each event
      since: null, // the id of the last event seen
      timer: null,
      generation: 0,
      controller: null, // aborts the long poll under way
    },
    nodes: {
      list: [],
      self: null, // the name of the node serving this page
      skewMs: 0, // the node's clock minus this browser's
      opened: false, // the panel was opened or closed once, by the page or by hand
      timer: null,
      generation: 0,
    },
  };

  // -- DOM -------------------------------------------------------------------

  /* An element with attributes and children; strings become text nodes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttributes(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    setAttributes(node, attrs);
    append(node, children);
    return node;
  }

  function setAttributes(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
  }

  function link(href, text, attrs) {
    return el("a", { href, ...attrs }, text);
  }

  // -- formatting ------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");
  const fmtInt = (n) => (typeof n === "number" ? n.toLocaleString("en") : "—");

  function fmtTime(iso) {
    const t = new Date(iso);
    if (!iso || Number.isNaN(t.getTime())) return "—";
    const hms = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
    if (t.toDateString() === new Date().toDateString()) return hms;
    return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${hms}`;
  }

  function timeEl(iso) {
    if (!iso) return "—";
    return el("time", { datetime: iso, title: iso, text: fmtTime(iso) });
  }

  function fmtAgo(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} m ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  /* A past time as an age on the node's clock ("3 s ago"), the time itself in its title. */
  function agoEl(iso) {
    const t = Date.parse(iso);
    if (!iso || Number.isNaN(t)) return "—";
    const age = (Date.now() + state.nodes.skewMs - t) / 1000;
    return el("time", { datetime: iso, title: iso, text: fmtAgo(age) });
  }

  function fmtDuration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
    const s = Math.max(0, seconds);
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 60) return `${Math.floor(s)} s`;
    const total = Math.floor(s);
    if (total < 3600) return `${Math.floor(total / 60)} m ${pad(total % 60)} s`;
    if (total < 86400) return `${Math.floor(total / 3600)} h ${pad(Math.floor((total % 3600) / 60))} m`;
    return `${Math.floor(total / 86400)} d ${Math.floor((total % 86400) / 3600)} h`;
  }

  function fmtElapsed(ms) {
    const s = Math.round(ms / 1000);
    if (s < 3600) return `${Math.floor(s / 60)}:${pad(s % 60)}`;
    return `${Math.floor(s / 3600)}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
  }

  function fmtPercent(value) {
    if (value > 0 && value < 10) return `${value.toFixed(1)}%`;
    return `${Math.floor(value)}%`;
  }

  function fmtRate(perMinute) {
    if (perMinute >= 100) return String(Math.round(perMinute));
    if (perMinute >= 10) return perMinute.toFixed(1).replace(/\.0$/, "");
    return perMinute.toFixed(2).replace(/\.?0+$/, "") || "0";
  }

  function knownStatus(status) {
    return STATUSES.includes(status) ? status : "unknown";
  }

  // -- the node's services ---------------------------------------------------

  class NodeError extends Error {}

  /* A service's answer; a NodeError if none came within timeoutMs (or
   * options.signal aborted the request). */
  async function call(url, options = {}, timeoutMs = TIMEOUT_MS) {
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

  function jobQuery(job, extra) {
    const params = new URLSearchParams({ job: job.job_id });
    if (job.project) params.set("project", job.project);
    for (const [name, value] of Object.entries(extra || {})) params.set(name, value);
    return params;
  }

  function nodeBase(job) {
    // A crawl's log and items stay on the node that ran it: another node of
    // the cluster links to that node's own address.
    if (!job.node || job.node === state.nodes.self) return "";
    const node = (state.nodes.list || []).find((n) => n.name === job.node);
    if (node && typeof node.url === "string" && /^https?:\/\//i.test(node.url)) {
      return node.url.endsWith("/") ? node.url : `${node.url}/`;
    }
    return "";
  }

  function crawlFileUrl(job, dir, extension) {
    const parts = [job.project, job.spider].map(encodeURIComponent).join("/");
    return `${nodeBase(job)}${dir}/${parts}/${encodeURIComponent(job.job_id)}.${extension}`;
  }

  function logUrl(job) {
    if (!serves.logs || !job.project || !job.spider || !job.started_at) return null;
    return crawlFileUrl(job, "logs", "log");
  }

  function itemsUrl(job) {
    // Scrapyd writes the feed once items come.
    if (!serves.items || !job.project || !job.spider || !job.total_documents_found) return null;
    return crawlFileUrl(job, "items", "jl");
  }

  function errorsUrl(job, format) {
    return `joberrors.json?${jobQuery(job, { format })}`;
  }

  // -- polling ---------------------------------------------------------------

  async function refresh() {
    clearTimeout(state.timer);
    state.timer = null;
    if (document.hidden) {
      setLive("paused");
      return;
    }
    const generation = ++state.generation;
    state.refreshing = generation;
    state.again = false;
    state.refreshedAt = Date.now();
    try {
      const params = new URLSearchParams({ limit: state.filters.limit, offset: state.filters.offset });
      if (state.filters.status) params.set("status", state.filters.status);
      if (state.filters.spider) params.set("spider", state.filters.spider);
      const answer = await call(`jobs.json?${params}`);
      if (generation !== state.generation) return;
      if (answer.code === 401) throw new NodeError("the node asks for credentials: reload the page to sign in");
      if (answer.code === 400 && answer.data && answer.data.message) {
        setReachable();
        showNotice(answer.data.message, "error");
        return;
      }
      if (!answer.ok || !answer.data || !Array.isArray(answer.data.jobs)) {
        throw new NodeError(`the node answered HTTP ${answer.code}`);
      }
      state.jobs = answer.data.jobs;
      state.total = answer.data.total;
      if (state.jobs.length === 0 && state.filters.offset > 0 && state.total > 0) {
        // The page is past the end (jobs were pruned): show the last one.
        state.filters.offset = Math.floor((state.total - 1) / state.filters.limit) * state.filters.limit;
        writeHash();
        state.timer = setTimeout(refresh, 0);
        return;
      }
      state.jobs.forEach(sample);
      noteSpiders(state.jobs);
      renderTable();
      if (state.details) await loadDetails(generation);
      setReachable();
    } catch (error) {
      if (generation !== state.generation) return;
      if (!(error instanceof NodeError)) throw error;
      setUnreachable(error.message);
    } finally {
      if (state.refreshing === generation) state.refreshing = 0;
      if (generation === state.generation && !document.hidden && state.timer === null) {
        // An event came while this refresh was under way: the next one at once.
        const delay = state.again ? Math.max(0, state.refreshedAt + EVENTS_GAP_MS - Date.now()) : POLL_MS;
        state.again = false;
        state.timer = setTimeout(refresh, delay);
      }
    }
  }

  /* A refresh as soon as may be (an event came): a refresh under way is let
   * finish, then followed by another; never more than one each EVENTS_GAP_MS. */
  function refreshSoon() {
    if (document.hidden) return;
    if (state.refreshing) {
      state.again = true;
      return;
    }
    clearTimeout(state.timer);
    state.timer = setTimeout(refresh, Math.max(0, state.refreshedAt + EVENTS_GAP_MS - Date.now()));
  }

  function newDetails(id, project) {
    return {
      id,
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

  function readJob(details, withSeries) {
    const extra = withSeries ? { series: "1" } : {};
    return call(`jobstatus.json?${jobQuery({ job_id: details.id, project: details.project }, extra)}`);
  }

  async function loadDetails(generation) {
    const details = state.details;
    const current = () => generation === state.generation && state.details === details;
    const changes = details.changes;
    const changed = changes !== details.seen;
    const { doc } = details;
    // A finished job does not change: read once, with its series, unless an
    // event says otherwise. A paused one may be resumed: it is read as it goes.
    if (!doc || !ENDED.has(doc.status) || changed || !details.seriesAt) {
      let withSeries = changed || !details.seriesAt || Date.now() - details.seriesAt >= SERIES_POLL_MS;
      let answer = await readJob(details, withSeries);
      if (!current()) return;
      const job = answer.ok && answer.data ? answer.data.job : null;
      if (job && !job.is_active && !withSeries && (!doc || doc.is_active)) {
        // It ended or paused since its series was read: once more, for the series' last points.
        withSeries = true;
        answer = await readJob(details, true);
        if (!current()) return;
      }
      if (answer.ok && answer.data && answer.data.job) {
        details.doc = answer.data.job;
        details.error = null;
        details.seen = changes;
        if (withSeries) {
          // A node older than the series answers without it: the chart makes do with its readings.
          details.series = Array.isArray(details.doc.series) ? details.doc.series : null;
          details.seriesAt = Date.now();
        }
        delete details.doc.series;
        sample(details.doc);
      } else if (answer.code === 404 || answer.code === 400) {
        details.error = (answer.data && answer.data.message) || `job ${details.id} not found`;
      } else {
        throw new NodeError(`the node answered HTTP ${answer.code}`);
      }
    }
    if (wantsWebhooks(details, changed)) {
      await loadWebhooks(details);
      if (!current()) return;
    }
    renderDetails();
  }

  /* The webhook log is read when the details open and on each of the job's
   * events (a status change is a delivery), and as often as the series while
   * the job runs or a delivery waits for a retry. */
  function wantsWebhooks(details, changed) {
    if (!details.doc || Date.now() < state.webhooksMissingUntil) return false;
    if (!details.webhooksAt || changed) return true;
    const waiting = (details.webhooks || []).some((delivery) => delivery.status === "pending");
    return (details.doc.is_active || waiting) && Date.now() - details.webhooksAt >= SERIES_POLL_MS;
  }

  async function loadWebhooks(details) {
    const answer = await call(`webhooks.json?${jobQuery({ job_id: details.id, project: details.project })}`);
    details.webhooksAt = Date.now();
    if (answer.ok && answer.data && Array.isArray(answer.data.deliveries)) {
      details.webhooks = answer.data.deliveries;
    } else if (answer.code === 404) {
      details.webhooks = null;
      // Without JSON: a scrapyd.conf without the service (with JSON: an unknown job).
      if (!answer.data) state.webhooksMissingUntil = Date.now() + SERVICE_MISSING_POLL_MS;
    }
  }

  // -- live updates: events.json ----------------------------------------------

  /* events.json is a long poll, answered as soon as a job's history moves:
   * it starts, gets its first response, stalls, is cancelled, ends. Each
   * answer with events refreshes the job list (and the open details, with
   * their series and webhook log, when the events are their job's) at once,
   * instead of at the next poll. The 2 s poll stays as it was, as the
   * heartbeat: counters move between events without making any, and a job
   * just queued makes none either. Without the service (404: an older
   * scrapyd.conf), the page polls as before, silently, and asks again now and
   * then; paused with the rest while the tab is hidden. */
  async function watchEvents() {
    const events = state.events;
    clearTimeout(events.timer);
    events.timer = null;
    if (document.hidden || events.controller) return;
    const generation = ++events.generation;
    const controller = new AbortController();
    events.controller = controller;
    let delay = EVENTS_GAP_MS;
    try {
      // Without since: the latest event's id, at once; with it, the events after it, waited for.
      const params = new URLSearchParams();
      if (events.since !== null) {
        params.set("since", events.since);
        params.set("wait", EVENTS_WAIT_S);
      }
      const query = params.toString();
      const answer = await call(
        query ? `events.json?${query}` : "events.json",
        { signal: controller.signal },
        EVENTS_WAIT_S * 1000 + TIMEOUT_MS,
      );
      if (generation !== events.generation) return;
      const data = answer.data || {};
      if (answer.ok && Array.isArray(data.events) && Number.isInteger(data.last_id)) {
        const first = events.since === null;
        events.since = data.last_id;
        setEvents(true);
        if (!first && data.events.length) onEvents(data.events);
      } else if (answer.code === 404) {
        events.since = null;
        setEvents(false);
        delay = SERVICE_MISSING_POLL_MS;
      } else {
        // A refusal or an error (a since the store no longer knows): start again from the latest.
        if (answer.code === 400) events.since = null;
        delay = EVENTS_RETRY_MS;
      }
    } catch (error) {
      if (!(error instanceof NodeError)) throw error;
      // Out of reach: the job list's poll says so; the stream is asked again later.
      delay = EVENTS_RETRY_MS;
    } finally {
      if (events.controller === controller) events.controller = null;
      if (generation === events.generation && !document.hidden && events.timer === null) {
        events.timer = setTimeout(watchEvents, delay);
      }
    }
  }

  function stopEvents() {
    const events = state.events;
    events.generation += 1; // an answer on its way is not used
    clearTimeout(events.timer);
    events.timer = null;
    if (events.controller) events.controller.abort();
    events.controller = null;
    // Shown again, the page reads everything afresh: the stream starts from the latest event.
    events.since = null;
  }

  function onEvents(list) {
    const details = state.details;
    if (details && list.some((event) => event.job_id === details.id)) details.changes += 1;
    refreshSoon();
  }

  function setEvents(on) {
    state.events.on = on;
    const live = $("live");
    live.dataset.events = on ? "on" : "off";
    live.title = on
      ? `Updated on each job event (events.json), and every ${POLL_MS / 1000} s`
      : `Updated every ${POLL_MS / 1000} s`;
  }

  /* The nodes sharing the job store, from nodes.json: less often than the
   * jobs. The job list tells when the node is unreachable; this panel only
   * keeps its last known state then. */
  async function refreshNodes() {
    const nodes = state.nodes;
    clearTimeout(nodes.timer);
    nodes.timer = null;
    if (document.hidden) return;
    const generation = ++nodes.generation;
    let delay = NODES_POLL_MS;
    try {
      const answer = await call("nodes.json");
      if (generation !== nodes.generation) return;
      if (answer.code === 404) {
        // A scrapyd.conf without the service: no panel, and no error.
        nodes.list = [];
        renderNodes();
        delay = NODES_MISSING_POLL_MS;
      } else if (answer.ok && answer.data && Array.isArray(answer.data.nodes)) {
        nodes.list = answer.data.nodes;
        nodes.self = answer.data.node_name || null;
        nodes.skewMs = clockSkew(answer.date);
        renderNodes();
      }
    } catch (error) {
      if (!(error instanceof NodeError)) throw error;
    } finally {
      if (generation === nodes.generation && !document.hidden && nodes.timer === null) {
        nodes.timer = setTimeout(refreshNodes, delay);
      }
    }
  }

  /* The node's clock minus this browser's, from an answer's Date header: ages
   * are the node's, whatever the browser's clock says. The header is to the
   * second (cut, hence the half second): clocks that agree within that are
   * taken to agree. */
  function clockSkew(date) {
    const t = Date.parse(date || "");
    const skew = Number.isNaN(t) ? 0 : t + 500 - Date.now();
    return Math.abs(skew) < MAX_CLOCK_SKEW_MS ? 0 : skew;
  }

  function setLive(mode, text) {
    const live = $("live");
    live.dataset.mode = mode;
    if (mode === "live") live.textContent = `Live · updated ${fmtTime(new Date().toISOString())}`;
    else if (mode === "paused") live.textContent = "Paused while the tab is hidden";
    else live.textContent = text || "Offline";
  }

  function setReachable() {
    state.failingSince = null;
    $("alert").hidden = true;
    document.body.classList.remove("stale");
    setLive("live");
  }

  function setUnreachable(reason) {
    state.failingSince = state.failingSince || new Date();
    const alert = $("alert");
    alert.replaceChildren(
      el("strong", { text: "The node is unreachable" }),
      ` since ${fmtTime(state.failingSince.toISOString())} (${reason}). `,
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

  // -- the pages-per-minute chart ----------------------------------------------

  /* Keep a reading of the job's counters at the time the crawl wrote them
   * (updated_at, or completed_at once it ended): they extend the job's series
   * until it is read again, and stand in for it on a node without one. */
  function sample(job) {
    if (!job.started_at) return;
    const t = Date.parse(job.is_active ? job.updated_at : job.completed_at || job.updated_at);
    if (Number.isNaN(t)) return;
    let list = state.samples.get(job.job_id);
    if (!list) {
      if (state.samples.size >= MAX_SAMPLED_JOBS) state.samples.delete(state.samples.keys().next().value);
      list = [];
      state.samples.set(job.job_id, list);
    }
    const last = list[list.length - 1];
    if (last && last[0] >= t) return;
    list.push([t, job.total_pages_crawled, job.total_documents_found, job.responses_failed]);
    if (list.length > MAX_SAMPLES) list.splice(1, list.length - MAX_SAMPLES);
  }

  /* Points [time ms, pages crawled, documents found, failed responses] of a
   * job's run, in time order, no counter ever going down; ``recorded`` when
   * they are the job's series as the node recorded it (jobstatus.json?series=1),
   * followed by the readings this page took since. Without a series (a node
   * or a job older than it), the known points: the start (0 pages), the
   * first response (1), the readings this page took while open, and the end. */
  function chartPoints(doc, series) {
    const start = Date.parse(doc.started_at);
    if (Number.isNaN(start)) return null;
    const readings = state.samples.get(doc.job_id) || [];
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
    const sorted = points
      .filter(([t]) => !Number.isNaN(t) && t >= start)
      .sort((a, b) => a[0] - b[0]);
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
  function valueAt(points, t, index) {
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
  function knownAt(points, t, index) {
    let value = points[0][index];
    for (const point of points) {
      if (point[0] > t) break;
      value = point[index];
    }
    return value;
  }

  function largestGap(points, a, b) {
    let gap = 0;
    for (let i = 1; i < points.length; i += 1) {
      const [t0] = points[i - 1];
      const [t1] = points[i];
      if (t1 > a && t0 < b) gap = Math.max(gap, t1 - t0);
    }
    return gap;
  }

  function chart(doc, series) {
    const known = chartPoints(doc, series);
    const points = known && known.points;
    if (!points || points.length < 2 || !doc.total_pages_crawled) {
      return el("p", { class: "muted", text: "No pages crawled." });
    }
    const { recorded } = known;
    const start = points[0][0];
    const end = points[points.length - 1][0];
    const span = end - start;
    if (span < MIN_CHART_MS) {
      return el("p", {
        class: "muted",
        text: `${fmtInt(doc.total_pages_crawled)} pages in ${fmtDuration(span / 1000)}: too short for a rate.`,
      });
    }
    const step = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400]
      .map((s) => s * 1000)
      .find((s) => span / s <= 40) || 86400000;
    const perMinute = (a, b, index) => ((valueAt(points, b, index) - valueAt(points, a, index)) * 60000) / (b - a);
    const buckets = [];
    for (let a = start; a < end; a += step) {
      const b = Math.min(a + step, end);
      buckets.push({
        a,
        b,
        rate: perMinute(a, b, 1),
        documents: perMinute(a, b, 2),
        failed: knownAt(points, b, 3) - knownAt(points, a, 3),
        measured: largestGap(points, a, b) <= Math.max(step, MEASURED_GAP_MS),
      });
    }
    // Documents and failures are charted from the recorded series only (known
    // points say nothing of them).
    const documents = recorded && points[points.length - 1][2] > 0;
    const failures = recorded ? buckets.reduce((sum, bucket) => sum + bucket.failed, 0) : 0;
    const width = 600;
    const height = 170;
    const left = 44;
    const bottom = 22;
    const top = 8;
    const plotW = width - left - 8;
    const plotH = height - top - bottom;
    const peak = Math.max(...buckets.map((bucket) => Math.max(bucket.rate, documents ? bucket.documents : 0)), 1);
    const xOf = (t) => left + ((t - start) / span) * plotW;
    const yOf = (rate) => top + plotH - (rate / peak) * plotH;
    const graph = svg("svg", {
      class: "chart",
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": "Pages crawled per minute over the job's life",
    });
    graph.append(
      svg("line", { class: "axis", x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH }),
      svg("line", { class: "grid", x1: left, y1: top, x2: left + plotW, y2: top }),
      svg("line", { class: "grid", x1: left, y1: top + plotH / 2, x2: left + plotW, y2: top + plotH / 2 }),
      svg("text", { class: "label", x: left - 6, y: top + 4, "text-anchor": "end" }, fmtRate(peak)),
      svg("text", { class: "label", x: left - 6, y: top + plotH / 2 + 4, "text-anchor": "end" }, fmtRate(peak / 2)),
      svg("text", { class: "label", x: left - 6, y: top + plotH + 4, "text-anchor": "end" }, "0"),
      svg("text", { class: "label", x: left, y: height - 4 }, "0:00"),
      svg("text", { class: "label", x: left + plotW, y: height - 4, "text-anchor": "end" }, fmtElapsed(span)),
    );
    buckets.forEach((bucket) => {
      const x = xOf(bucket.a);
      const w = Math.max(1, ((bucket.b - bucket.a) / span) * plotW - 1);
      const h = (bucket.rate / peak) * plotH;
      const what = [`${fmtRate(bucket.rate)} pages/min`];
      if (documents) what.push(`${fmtRate(bucket.documents)} documents/min`);
      if (bucket.failed) what.push(`${fmtInt(bucket.failed)} failed ${bucket.failed === 1 ? "response" : "responses"}`);
      const how = bucket.measured ? "measured" : "averaged";
      graph.append(
        svg(
          "rect",
          {
            class: `col ${bucket.measured ? "measured" : "estimated"}`,
            x,
            y: top + plotH - h,
            width: w,
            height: h,
            dataset: { from: bucket.a - start, to: bucket.b - start, rate: bucket.rate },
          },
          svg("title", {}, `${fmtElapsed(bucket.a - start)}–${fmtElapsed(bucket.b - start)}: ${what.join(", ")} (${how})`),
        ),
      );
      if (bucket.failed) {
        graph.append(
          svg(
            "rect",
            { class: "fail", x, y: top + plotH + 2, width: w, height: 4, dataset: { failed: bucket.failed } },
            svg("title", {}, `${fmtElapsed(bucket.a - start)}–${fmtElapsed(bucket.b - start)}: ${what[what.length - 1]}`),
          ),
        );
      }
    });
    if (documents) {
      const line = buckets.map((bucket) => `${xOf((bucket.a + bucket.b) / 2).toFixed(1)},${yOf(bucket.documents).toFixed(1)}`);
      graph.append(svg("polyline", { class: "docs", points: line.join(" ") }, svg("title", {}, "Documents found per minute")));
    }
    const average = ((points[points.length - 1][1] - points[0][1]) * 60000) / span;
    const notes = [`Average ${fmtRate(average)} pages/min over ${fmtDuration(span / 1000)}.`];
    if (documents) notes.push([el("span", { class: "key key-docs", "aria-hidden": "true" }), "Line: documents per minute."]);
    if (failures) {
      notes.push([
        el("span", { class: "key key-fail", "aria-hidden": "true" }),
        `Red marks: steps with failed responses (${fmtInt(failures)} in all).`,
      ]);
    }
    if (buckets.some((bucket) => !bucket.measured)) {
      notes.push(
        recorded
          ? "Light bars are averages over gaps in the counters the node recorded."
          : "Light bars are averages between known points (start, first response, end); " +
              "dark bars are measured from the counters this page read while open.",
      );
    }
    const source = recorded ? "from the counters the node recorded over the job's run" : "from known points";
    return el(
      "figure",
      { class: "chart-box" },
      graph,
      el(
        "figcaption",
        { class: "muted" },
        `Pages per minute, ${step / 1000}-second steps, ${source}. `,
        notes.map((note, i) => [i ? " " : "", note]),
      ),
    );
  }

  // -- the nodes panel ---------------------------------------------------------

  function nodeRow(node) {
    const alive = node.alive === true;
    const health = alive ? "alive" : "dead";
    const slots = `${fmtInt(node.running)} / ${fmtInt(node.max_proc)}`;
    return el(
      "tr",
      { class: `node-row ${health}`, dataset: { node: node.name } },
      cell(
        "Node",
        [
          el("span", { class: "node-name", title: node.name, text: node.name }),
          node.name === state.nodes.self ? [" ", el("span", { class: "chip this", text: "this node" })] : null,
        ],
        "name",
      ),
      cell("State", el("span", { class: `badge badge-${health}`, text: health }), "state"),
      cell("Crawls", el("span", { title: "crawls running / max_proc", text: slots }), "num slots"),
      cell("Last seen", agoEl(node.last_seen), "seen"),
      cell("Up since", timeEl(node.started_at), "since"),
      cell("Version", node.version ? el("span", { title: node.version, text: node.version }) : "—", "version"),
      cell("URL", node.url ? pageLink(node.url) : "—", "address"),
    );
  }

  function renderNodes() {
    const { list } = state.nodes;
    const panel = $("nodes");
    // One node is all the jobs ran on: the jobs table needs no node column.
    document.body.classList.toggle("one-node", list.length === 1);
    if (!list.length) {
      panel.hidden = true;
      return;
    }
    const alive = list.filter((node) => node.alive === true).length;
    const dead = list.length - alive;
    const summary = $("nodes-summary");
    summary.replaceChildren();
    append(summary, [
      `${list.length} ${list.length === 1 ? "node" : "nodes"}, ${alive} alive`,
      dead ? [" ", el("span", { class: "badge badge-dead", text: `${dead} dead` })] : null,
    ]);
    $("nodes-body").replaceChildren(...list.map(nodeRow));
    if (!state.nodes.opened) {
      // Open at first when there is something to see: several nodes, or a dead one.
      panel.open = list.length > 1 || dead > 0;
    }
    panel.hidden = false;
    if (state.rows.size) renderTable(); // rows whose node's address is known now
  }

  // -- the jobs table --------------------------------------------------------

  function badge(status) {
    const known = knownStatus(status);
    return el("span", { class: `badge badge-${known}`, text: status || "unknown" });
  }

  function progressBar(job) {
    const known = typeof job.progress === "number" && Number.isFinite(job.progress);
    const value = known ? Math.max(0, Math.min(100, job.progress)) : null;
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

  function eta(job) {
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
  function attemptOf(job) {
    const attempt = Number.isInteger(job.attempt) && job.attempt > 0 ? job.attempt : 1;
    const retries = Number.isInteger(job.retries) && job.retries > 0 ? job.retries : 0;
    if (!retries && attempt === 1) return null;
    return { attempt, total: Math.max(attempt, retries + 1) };
  }

  function retryAt(job) {
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

  function fileLinks(job) {
    const links = [];
    const log = logUrl(job);
    if (log) links.push(link(log, "Log", { target: "_blank", rel: "noopener" }));
    const items = itemsUrl(job);
    if (items) links.push(link(items, "Items", { target: "_blank", rel: "noopener" }));
    if (job.started_at) {
      links.push(link(errorsUrl(job, "csv"), "Errors", { class: "errors-csv", title: "Error report (CSV)" }));
    }
    return links.length ? links : "—";
  }

  function actions(job) {
    const buttons = [];
    if (!serves.actions) return el("div", { class: "buttons" }, buttons);
    if (job.status === "paused") {
      buttons.push(el("button", { type: "button", class: "secondary resume", title: "Queue it again: it goes on where it stopped", onclick: (e) => resumeJob(job, e.currentTarget) }, "Resume"));
    } else if (job.status === "pending" || (job.status === "running" && job.pausable === true)) {
      const title = job.status === "pending" ? "Hold it out of the queue until it is resumed" : "Stop it, keeping its crawl state to resume later";
      buttons.push(el("button", { type: "button", class: "secondary pause", title, onclick: (e) => pauseJob(job, e.currentTarget) }, "Pause"));
    }
    if (["pending", "running", "pausing", "paused"].includes(job.status)) {
      buttons.push(el("button", { type: "button", class: "danger cancel", onclick: (e) => cancelJob(job, false, e.currentTarget) }, "Cancel"));
    } else if (job.status === "cancelling") {
      buttons.push(el("button", { type: "button", class: "danger force", onclick: (e) => cancelJob(job, true, e.currentTarget) }, "Force stop"));
    }
    return el("div", { class: "buttons" }, buttons);
  }

  function cell(label, content, className) {
    return el("td", { class: className, dataset: { label } }, content);
  }

  function buildRow(job) {
    return el(
      "tr",
      { class: `job status-${knownStatus(job.status)}`, dataset: { job: job.job_id, status: job.status } },
      cell("Job", el("button", { type: "button", class: "link job-id", title: "Progress details", onclick: () => openDetails(job) }, job.job_id), "job"),
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
      cell("Actions", actions(job), "actions"),
    );
  }

  function renderTable() {
    const body = $("jobs-body");
    const seen = new Set();
    let previous = null;
    for (const job of state.jobs) {
      // A row links to the files on the job's node, known from nodes.json.
      const key = `${JSON.stringify(job)} ${nodeBase(job)}`;
      let entry = state.rows.get(job.job_id);
      if (!entry || entry.key !== key) {
        const tr = buildRow(job);
        if (entry) entry.tr.replaceWith(tr);
        entry = { key, tr };
        state.rows.set(job.job_id, entry);
      }
      const wanted = previous ? previous.nextSibling : body.firstChild;
      if (wanted !== entry.tr) body.insertBefore(entry.tr, wanted);
      previous = entry.tr;
      seen.add(job.job_id);
    }
    for (const [id, entry] of state.rows) {
      if (!seen.has(id)) {
        entry.tr.remove();
        state.rows.delete(id);
      }
    }
    $("empty").hidden = state.jobs.length > 0;
    $("jobs").hidden = state.jobs.length === 0;
    const { offset, limit } = state.filters;
    $("range").textContent = state.total
      ? `${offset + 1}–${offset + state.jobs.length} of ${state.total}`
      : "0 jobs";
    $("newer").disabled = offset === 0;
    $("older").disabled = offset + state.jobs.length >= state.total;
  }

  function noteSpiders(jobs) {
    let added = false;
    for (const job of jobs) {
      if (job.spider && !state.spiders.has(job.spider)) {
        state.spiders.add(job.spider);
        added = true;
      }
    }
    if (added) $("spiders").replaceChildren(...[...state.spiders].sort().map((name) => el("option", { value: name })));
  }

  /* A job's newer document (from a cancel's answer): shown at once. */
  function applyDocument(doc) {
    const index = state.jobs.findIndex((job) => job.job_id === doc.job_id);
    if (index >= 0) {
      state.jobs[index] = { ...doc, errors: [], history: [], error_count: 0, has_errors: false };
      renderTable();
    }
    sample(doc);
    if (state.details && state.details.id === doc.job_id) {
      state.details.doc = doc;
      renderDetails();
    }
  }

  const CANCEL_OUTCOMES = {
    pending: "It is taken out of the queue and never starts.",
    paused: "It is never resumed: its saved crawl state is removed.",
  };

  async function cancelJob(job, force, button) {
    const question = force
      ? `Force stop job ${job.job_id}?\n\nIn-flight requests are dropped now: their results may be lost.`
      : `Cancel job ${job.job_id}?\n\n${
          CANCEL_OUTCOMES[job.status] || "No new requests are sent; in-flight requests finish and their results are kept."
        }`;
    if (!window.confirm(question)) return;
    await askNode(job, "jobcancel.json", force ? { force: "1" } : {}, button, "cancel");
  }

  /* A pending job is paused at once; a running one once its in-flight
   * requests are done (pausing), its crawl state kept: nothing is lost, so
   * nothing is asked. */
  function pauseJob(job, button) {
    return askNode(job, "jobpause.json", {}, button, "pause");
  }

  /* A paused job goes back to the queue, and goes on where it stopped. */
  function resumeJob(job, button) {
    return askNode(job, "jobresume.json", {}, button, "resume");
  }

  /* A job service's answer to a cancel, pause or resume request: the job's
   * new document shown at once, or the node's refusal. */
  async function askNode(job, service, extra, button, verb) {
    if (button) button.disabled = true;
    let answer;
    try {
      answer = await call(service, { method: "POST", body: jobQuery(job, extra) });
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

  // -- the details panel ------------------------------------------------------

  function openDetails(job) {
    if (!state.details || state.details.id !== job.job_id) {
      state.details = newDetails(job.job_id, job.project);
    }
    $("details").hidden = false;
    document.body.classList.add("with-details");
    writeHash();
    renderDetails();
    $("details-close").focus();
    refresh();
  }

  function closeDetails() {
    state.details = null;
    $("details").hidden = true;
    document.body.classList.remove("with-details");
    writeHash();
  }

  function section(title, ...content) {
    return el("section", { class: "block" }, el("h3", { text: title }), ...content);
  }

  function counters(doc) {
    const attempt = attemptOf(doc);
    const rows = [
      ["Project", doc.project],
      ["Spider", doc.spider],
      ["Node", doc.node],
      ["Stage", doc.stage],
      ["Stages done", (doc.stages_completed || []).join(", ") || null],
      ["Progress", typeof doc.progress === "number" ? fmtPercent(doc.progress) : null],
      ["Attempt", attempt ? `${attempt.attempt} of ${attempt.total}` : null],
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

  function timeline(doc) {
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

  function pageLink(url) {
    // Only web addresses become links: a javascript: or data: URL stays text.
    if (typeof url === "string" && /^https?:\/\//i.test(url)) {
      return link(url, url, { class: "url", target: "_blank", rel: "noopener noreferrer" });
    }
    return el("span", { class: "url", text: url || "" });
  }

  function errorList(doc) {
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
  function attemptLog(doc) {
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
  function feedList(doc) {
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

  const DELIVERY_STATUSES = ["pending", "delivered", "failed"];

  function webhookSummary(deliveries) {
    return DELIVERY_STATUSES.map((status) => [status, deliveries.filter((d) => d.status === status).length])
      .filter(([, count]) => count)
      .map(([status, count]) => `${count} ${status}`)
      .join(", ");
  }

  /* Each delivery of the job's webhooks, with its attempts. The URL (its
   * password redacted by the node) is text, never a link: the page does not
   * lead anyone to a receiver. */
  function deliveryLog(deliveries) {
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

  function argumentTable(doc) {
    const args = Object.entries(doc.args || {});
    if (!args.length) return el("p", { class: "muted", text: "None." });
    return el(
      "table",
      { class: "args" },
      el("tbody", {}, args.map(([name, value]) => el("tr", {}, el("th", { scope: "row", text: name }), el("td", {}, el("div", { class: "value", text: typeof value === "string" ? value : JSON.stringify(value) }))))),
    );
  }

  function renderDetails() {
    const details = state.details;
    if (!details) return;
    const summary = state.jobs.find((job) => job.job_id === details.id);
    const doc = details.doc || summary;
    $("details-title").replaceChildren(el("span", { class: "mono", text: details.id }), " ", doc ? badge(doc.status) : null);
    const parts = [];
    if (details.error) parts.push(el("p", { class: "error-message", text: details.error }));
    if (doc) {
      parts.push(el("p", { class: "message", text: doc.message || "" }));
      if (doc.error_message && !(doc.message || "").includes(doc.error_message)) {
        parts.push(el("p", { class: "error-message", text: doc.error_message }));
      }
      if (doc.warnings && doc.warnings.length) {
        parts.push(el("ul", { class: "warnings" }, doc.warnings.map((warning) => el("li", { text: warning }))));
      }
      parts.push(el("div", { class: "details-progress" }, progressBar(doc)));
      parts.push(el("div", { class: "details-actions" }, actions(doc), el("span", { class: "files" }, fileLinks(doc))));
      parts.push(section("Counters", counters(doc)));
      if (attemptOf(doc) && Array.isArray(doc.attempts) && doc.attempts.length) {
        parts.push(section(`Attempts (${doc.attempts.length})`, attemptLog(doc)));
      }
      parts.push(section("Pages per minute", chart(doc, details.series)));
      if (details.doc) {
        parts.push(section("History", timeline(doc)));
        if (Array.isArray(doc.feeds) && doc.feeds.length) {
          parts.push(section(`Feeds (${doc.feeds.length})`, feedList(doc)));
        }
        if (details.webhooks && details.webhooks.length) {
          parts.push(section(`Webhooks (${webhookSummary(details.webhooks)})`, deliveryLog(details.webhooks)));
        }
        parts.push(section(`Latest errors (${(doc.errors || []).length} of ${doc.error_count})`, errorList(doc)));
        parts.push(section("Spider arguments", argumentTable(doc)));
      } else {
        parts.push(el("p", { class: "muted", text: "Loading…" }));
      }
    }
    $("details-body").replaceChildren(...parts);
  }

  // -- filters, paging, location ----------------------------------------------

  function readHash() {
    const params = new URLSearchParams(window.location.hash.slice(1));
    const status = params.get("status") || "";
    const spider = params.get("spider") || "";
    const limit = Number.parseInt(params.get("limit"), 10);
    const offset = Number.parseInt(params.get("offset"), 10);
    state.filters.status = STATUSES.includes(status) ? status : "";
    state.filters.spider = NAME.test(spider) ? spider : "";
    state.filters.limit = limit >= 1 && limit <= 1000 ? limit : 20;
    state.filters.offset = offset > 0 ? offset : 0;
    $("filter-status").value = state.filters.status;
    $("filter-spider").value = state.filters.spider;
    const sizes = $("filter-limit");
    if (![...sizes.options].some((option) => option.value === String(state.filters.limit))) {
      sizes.append(el("option", { text: String(state.filters.limit) }));
    }
    sizes.value = String(state.filters.limit);
    const job = params.get("job");
    if (job && (!state.details || state.details.id !== job)) {
      state.details = newDetails(job, params.get("project"));
      $("details").hidden = false;
      document.body.classList.add("with-details");
      renderDetails();
    } else if (!job && state.details) {
      closeDetails();
    }
  }

  function writeHash() {
    const params = new URLSearchParams();
    const { status, spider, limit, offset } = state.filters;
    if (status) params.set("status", status);
    if (spider) params.set("spider", spider);
    if (limit !== 20) params.set("limit", limit);
    if (offset) params.set("offset", offset);
    if (state.details) {
      params.set("job", state.details.id);
      if (state.details.project) params.set("project", state.details.project);
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
    const changed = spider !== state.filters.spider || $("filter-status").value !== state.filters.status
      || Number($("filter-limit").value) !== state.filters.limit;
    if (!changed) return;
    state.filters.status = $("filter-status").value;
    state.filters.spider = spider;
    state.filters.limit = Number($("filter-limit").value);
    state.filters.offset = 0;
    writeHash();
    refresh();
  }

  function page(direction) {
    const { limit, offset } = state.filters;
    state.filters.offset = Math.max(0, offset + direction * limit);
    writeHash();
    refresh();
  }

  function start() {
    let typing = null;
    const filters = $("filters");
    filters.addEventListener("submit", (event) => {
      event.preventDefault();
      applyFilters();
    });
    filters.addEventListener("change", applyFilters);
    $("filter-spider").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(applyFilters, 400);
    });
    filters.addEventListener("reset", (event) => {
      event.preventDefault();
      $("filter-status").value = "";
      $("filter-spider").value = "";
      $("filter-limit").value = "20";
      applyFilters();
    });
    $("newer").addEventListener("click", () => page(-1));
    $("older").addEventListener("click", () => page(1));
    $("details-close").addEventListener("click", closeDetails);
    $("notice-close").addEventListener("click", () => {
      $("notice").hidden = true;
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && state.details) closeDetails();
    });
    $("nodes").addEventListener("toggle", () => {
      state.nodes.opened = true;
    });
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        clearTimeout(state.timer);
        state.timer = null;
        state.generation += 1; // an answer on its way is not shown
        clearTimeout(state.nodes.timer);
        state.nodes.timer = null;
        state.nodes.generation += 1;
        stopEvents();
        setLive("paused");
      } else {
        refresh();
        refreshNodes();
        watchEvents();
      }
    });
    window.addEventListener("hashchange", () => {
      readHash();
      refresh();
    });
    readHash();
    refresh();
    refreshNodes();
    watchEvents();
  }

  start();
})();
