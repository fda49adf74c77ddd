/* The pages-per-minute chart of the details panel, drawn as SVG from
 * chart.js's arithmetic. */

import { FRAME, MIN_CHART_MS, chartPoints, plot } from "./chart.js";
import { el, svg } from "./dom.js";
import { fmtDuration, fmtElapsed, fmtInt, fmtRate } from "./format.js";

/* The chart of a job from its recorded series (or null) and this page's
 * readings of its counters; a line of text when there is too little. */
export function chart(doc, series, readings) {
  const known = chartPoints(doc, series, readings);
  const points = known && known.points;
  if (!points || points.length < 2 || !doc.total_pages_crawled) {
    return el("p", { class: "muted", text: "No pages crawled." });
  }
  const span = points[points.length - 1][0] - points[0][0];
  if (span < MIN_CHART_MS) {
    return el("p", {
      class: "muted",
      text: `${fmtInt(doc.total_pages_crawled)} pages in ${fmtDuration(span / 1000)}: too short for a rate.`,
    });
  }
  const drawn = plot(known);
  return el("figure", { class: "chart-box" }, graph(drawn), el("figcaption", { class: "muted" }, caption(drawn)));
}

function graph(drawn) {
  const { axis } = drawn;
  const node = svg("svg", {
    class: "chart",
    viewBox: `0 0 ${FRAME.width} ${FRAME.height}`,
    role: "img",
    "aria-label": "Pages crawled per minute over the job's life",
  });
  node.append(
    svg("line", { class: "axis", x1: axis.x1, y1: axis.y, x2: axis.x2, y2: axis.y }),
    svg("line", { class: "grid", x1: axis.x1, y1: axis.top, x2: axis.x2, y2: axis.top }),
    svg("line", { class: "grid", x1: axis.x1, y1: axis.middle, x2: axis.x2, y2: axis.middle }),
    ...drawn.ticks.map((tick) => svg("text", { class: "label", x: tick.x, y: tick.y, "text-anchor": tick.anchor }, tick.text)),
  );
  const documents = drawn.line !== null;
  for (const bar of drawn.bars) {
    const when = `${fmtElapsed(bar.from)}–${fmtElapsed(bar.to)}`;
    const what = [`${fmtRate(bar.rate)} pages/min`];
    if (documents) what.push(`${fmtRate(bar.documents)} documents/min`);
    if (bar.failed) what.push(`${fmtInt(bar.failed)} failed ${bar.failed === 1 ? "response" : "responses"}`);
    const how = bar.measured ? "measured" : "averaged";
    node.append(
      svg(
        "rect",
        {
          class: `col ${bar.measured ? "measured" : "estimated"}`,
          x: bar.x,
          y: bar.y,
          width: bar.width,
          height: bar.height,
          dataset: { from: bar.from, to: bar.to, rate: bar.rate },
        },
        svg("title", {}, `${when}: ${what.join(", ")} (${how})`),
      ),
    );
    if (bar.failed) {
      node.append(
        svg(
          "rect",
          { class: "fail", x: bar.x, y: drawn.failY, width: bar.width, height: 4, dataset: { failed: bar.failed } },
          svg("title", {}, `${when}: ${what[what.length - 1]}`),
        ),
      );
    }
  }
  if (documents) {
    node.append(svg("polyline", { class: "docs", points: drawn.line }, svg("title", {}, "Documents found per minute")));
  }
  return node;
}

function caption(drawn) {
  const { recorded } = drawn;
  const notes = [`Average ${fmtRate(drawn.average)} pages/min over ${fmtDuration(drawn.span / 1000)}.`];
  if (drawn.line !== null) notes.push([el("span", { class: "key key-docs", "aria-hidden": "true" }), "Line: documents per minute."]);
  if (drawn.failures) {
    notes.push([
      el("span", { class: "key key-fail", "aria-hidden": "true" }),
      `Red marks: steps with failed responses (${fmtInt(drawn.failures)} in all).`,
    ]);
  }
  if (drawn.bars.some((bar) => !bar.measured)) {
    notes.push(
      recorded
        ? "Light bars are averages over gaps in the counters the node recorded."
        : "Light bars are averages between known points (start, first response, end); " +
            "dark bars are measured from the counters this page read while open.",
    );
  }
  const source = recorded ? "from the counters the node recorded over the job's run" : "from known points";
  return [`Pages per minute, ${drawn.step / 1000}-second steps, ${source}. `, notes.map((note, i) => [i ? " " : "", note])];
}
