/* The nodes panel: the nodes sharing the job store, from nodes.json, read
 * less often than the jobs. The job list tells when the node is
 * unreachable; this panel only keeps its last known state then. */

import { NodeError, readNodes } from "./api.js";
import { $, append, cell, el, pageLink, timeEl } from "./dom.js";
import { fmtAgo, fmtInt } from "./format.js";
import { Poll } from "./poll.js";

// Nodes record a heartbeat every 5 s: the panel is read as often.
const NODES_POLL_MS = 5000;
// An older scrapyd.conf has no nodes.json: it is asked again now and then,
// with no panel and no error meanwhile.
const NODES_MISSING_POLL_MS = 60000;
const MAX_CLOCK_SKEW_MS = 2000;

const known = {
  list: [],
  self: null, // the name of the node serving this page
  skewMs: 0, // the node's clock minus this browser's
  opened: false, // the panel was opened or closed once, by the page or by hand
};
let changed = () => {};

export const nodesPoll = new Poll(readOnce, { every: NODES_POLL_MS });

/* The panel, read now and then; changed() once the nodes' addresses are
 * known or change (the job rows link to them). */
export function startNodes(onChange) {
  changed = onChange;
  $("nodes").addEventListener("toggle", () => {
    known.opened = true;
  });
  nodesPoll.now();
}

/* Where a job's log and items are: "" on this node, another node's own
 * address for a job it ran. */
export function nodeBase(job) {
  if (!job.node || job.node === known.self) return "";
  const node = known.list.find((n) => n.name === job.node);
  if (node && typeof node.url === "string" && /^https?:\/\//i.test(node.url)) {
    return node.url.endsWith("/") ? node.url : `${node.url}/`;
  }
  return "";
}

async function readOnce(signal) {
  try {
    const answer = await readNodes();
    if (signal.aborted) return undefined;
    if (answer.code === 404) {
      // A scrapyd.conf without the service: no panel, and no error.
      known.list = [];
      render();
      return NODES_MISSING_POLL_MS;
    }
    if (answer.ok && answer.data && Array.isArray(answer.data.nodes)) {
      known.list = answer.data.nodes;
      known.self = answer.data.node_name || null;
      known.skewMs = clockSkew(answer.date);
      render();
    }
  } catch (error) {
    if (!(error instanceof NodeError)) throw error;
  }
  return undefined;
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

/* A past time as an age on the node's clock ("3 s ago"), the time itself in its title. */
function agoEl(iso) {
  const t = Date.parse(iso);
  if (!iso || Number.isNaN(t)) return "—";
  const age = (Date.now() + known.skewMs - t) / 1000;
  return el("time", { datetime: iso, title: iso, text: fmtAgo(age) });
}

function nodeRow(node) {
  const health = node.alive === true ? "alive" : "dead";
  const slots = `${fmtInt(node.running)} / ${fmtInt(node.max_proc)}`;
  return el(
    "tr",
    { class: `node-row ${health}`, dataset: { node: node.name } },
    cell(
      "Node",
      [
        el("span", { class: "node-name", title: node.name, text: node.name }),
        node.name === known.self ? [" ", el("span", { class: "chip this", text: "this node" })] : null,
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

function render() {
  const { list } = known;
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
  if (!known.opened) {
    // Open at first when there is something to see: several nodes, or a dead one.
    panel.open = list.length > 1 || dead > 0;
  }
  panel.hidden = false;
  changed();
}
