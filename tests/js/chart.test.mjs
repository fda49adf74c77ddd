// The pages-per-minute chart's arithmetic, without a browser: node --test tests/js/
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  FRAME,
  Readings,
  barValue,
  chartPoints,
  knownAt,
  pathOf,
  plot,
  scaleOf,
  stepFor,
  stepsOf,
  ticksOf,
  valueAt,
} from "../../extensions/scrapy_jobstatus/scrapyd/static/js/chart.js";

const START = Date.parse("2026-01-01T10:00:00Z");
const PLOT_W = FRAME.width - FRAME.left - FRAME.right;
const PLOT_H = FRAME.height - FRAME.top - FRAME.bottom;
const iso = (ms) => new Date(ms).toISOString();
const at = (seconds) => START + seconds * 1000;

/* A series as jobstatus.json?series=1 gives it: [seconds, pages, documents, failed] each. */
const series = (...rows) => rows.map(([s, pages, documents, failed]) => ({ t: iso(at(s)), pages, documents, failed }));

function job(fields = {}) {
  return {
    job_id: "j1",
    started_at: iso(START),
    updated_at: iso(at(60)),
    is_active: true,
    total_pages_crawled: 0,
    total_documents_found: 0,
    responses_failed: 0,
    ...fields,
  };
}

describe("chartPoints", () => {
  test("a recorded series is the points, then the readings taken after its last", () => {
    const readings = [
      [at(20), 5, 1, 0],
      [at(90), 40, 9, 2],
    ];
    const known = chartPoints(job(), series([0, 0, 0, 0], [30, 10, 2, 0], [60, 30, 6, 1]), readings);
    assert.equal(known.recorded, true);
    assert.deepEqual(known.points, [
      [at(0), 0, 0, 0],
      [at(30), 10, 2, 0],
      [at(60), 30, 6, 1],
      [at(90), 40, 9, 2],
    ]);
  });

  test("no counter ever goes down, one point a time, none before the start", () => {
    const known = chartPoints(job(), series([-5, 3, 0, 0], [0, 0, 0, 0], [10, 8, 4, 2], [10, 9, 4, 2], [20, 6, 1, 0], [30, 12, 5, 3]));
    assert.deepEqual(known.points, [
      [at(0), 0, 0, 0],
      [at(10), 9, 4, 2],
      [at(20), 9, 4, 2],
      [at(30), 12, 5, 3],
    ]);
  });

  test("without a series: the start, the first response, the readings and the end", () => {
    const doc = job({
      is_active: false,
      completed_at: iso(at(120)),
      total_pages_crawled: 50,
      total_documents_found: 7,
      responses_failed: 1,
      history: [{ step: "started", timestamp: iso(at(0)) }, { step: "first response", timestamp: iso(at(4)) }],
    });
    for (const none of [null, []]) {
      const known = chartPoints(doc, none, [[at(60), 20, 3, 0]]);
      assert.equal(known.recorded, false);
      assert.deepEqual(known.points, [
        [at(0), 0, 0, 0],
        [at(4), 1, 0, 0],
        [at(60), 20, 3, 0],
        [at(120), 50, 7, 1],
      ]);
    }
  });

  test("a running job without a series ends at its last reading", () => {
    const known = chartPoints(job(), null, [[at(30), 12, 0, 0]]);
    assert.deepEqual(known.points, [
      [at(0), 0, 0, 0],
      [at(30), 12, 0, 0],
    ]);
  });

  test("a single recorded point is one point", () => {
    const known = chartPoints(job(), series([0, 0, 0, 0]));
    assert.equal(known.recorded, true);
    assert.deepEqual(known.points, [[at(0), 0, 0, 0]]);
  });

  test("a job not started has no points", () => {
    assert.equal(chartPoints(job({ started_at: null }), series([0, 0, 0, 0])), null);
  });
});

describe("a counter between points", () => {
  const points = [
    [at(0), 0, 0, 0],
    [at(10), 10, 0, 1],
    [at(30), 50, 0, 4],
  ];

  test("valueAt is straight between the points around it", () => {
    assert.equal(valueAt(points, at(5), 1), 5);
    assert.equal(valueAt(points, at(20), 1), 30);
    assert.equal(valueAt(points, at(30), 1), 50);
  });

  test("valueAt before the first point and after the last is theirs", () => {
    assert.equal(valueAt(points, at(-10), 1), 0);
    assert.equal(valueAt(points, at(99), 1), 50);
  });

  test("knownAt is the last point's at or before the time", () => {
    assert.equal(knownAt(points, at(9), 3), 0);
    assert.equal(knownAt(points, at(10), 3), 1);
    assert.equal(knownAt(points, at(29), 3), 1);
    assert.equal(knownAt(points, at(31), 3), 4);
  });
});

describe("steps", () => {
  test("a run is cut in at most 40 steps of a round length", () => {
    assert.equal(stepFor(10_000), 5_000);
    assert.equal(stepFor(200_000), 5_000);
    assert.equal(stepFor(201_000), 10_000);
    assert.equal(stepFor(20 * 60_000), 30_000);
    assert.equal(stepFor(3_600_000), 120_000);
    assert.equal(stepFor(100 * 86_400_000), 86_400_000);
  });

  test("each step's rate is its pages per minute, the steps end to end", () => {
    // 30 pages a minute for 2 minutes, then 90 a minute for 1.
    const points = [
      [at(0), 0, 0, 0],
      [at(120), 60, 0, 0],
      [at(180), 150, 0, 0],
    ];
    const steps = stepsOf(points, 30_000);
    assert.deepEqual(
      steps.map((s) => [(s.a - START) / 1000, (s.b - START) / 1000, s.rate]),
      [
        [0, 30, 30],
        [30, 60, 30],
        [60, 90, 30],
        [90, 120, 30],
        [120, 150, 90],
        [150, 180, 90],
      ],
    );
    const pages = steps.reduce((sum, s) => sum + (s.rate * (s.b - s.a)) / 60_000, 0);
    assert.equal(pages, 150);
  });

  test("the last step stops at the last point", () => {
    const steps = stepsOf(
      [
        [at(0), 0, 0, 0],
        [at(70), 35, 0, 0],
      ],
      30_000,
    );
    assert.deepEqual(
      steps.map((s) => (s.b - s.a) / 1000),
      [30, 30, 10],
    );
    assert.ok(steps.every((s) => Math.abs(s.rate - 30) < 1e-9));
  });

  test("failures go whole into the step whose point first shows them", () => {
    const points = [
      [at(0), 0, 0, 0],
      [at(10), 5, 0, 0],
      [at(20), 10, 0, 3],
      [at(30), 15, 0, 3],
      [at(40), 20, 0, 4],
    ];
    assert.deepEqual(
      stepsOf(points, 10_000).map((s) => s.failed),
      [0, 3, 0, 1],
    );
  });

  test("a step over a gap in the counters is averaged, not measured", () => {
    const points = [
      [at(0), 0, 0, 0],
      [at(5), 5, 0, 0],
      [at(10), 10, 0, 0],
      [at(40), 40, 0, 0],
      [at(45), 45, 0, 0],
    ];
    assert.deepEqual(
      stepsOf(points, 5_000).map((s) => s.measured),
      [true, true, false, false, false, false, false, false, true],
    );
  });
});

describe("scales, paths and ticks", () => {
  test("the scale puts the run across the plot and the peak at its top", () => {
    const scale = scaleOf(START, 60_000, 90);
    assert.equal(scale.x(START), FRAME.left);
    assert.equal(scale.x(START + 30_000), FRAME.left + PLOT_W / 2);
    assert.equal(scale.x(START + 60_000), FRAME.left + PLOT_W);
    assert.equal(scale.y(0), FRAME.top + PLOT_H);
    assert.equal(scale.y(45), FRAME.top + PLOT_H / 2);
    assert.equal(scale.y(90), FRAME.top);
  });

  test("the path goes through the middle of each step at its value", () => {
    const scale = scaleOf(START, 60_000, 10);
    const steps = [
      { a: START, b: START + 30_000, documents: 10 },
      { a: START + 30_000, b: START + 60_000, documents: 5 },
    ];
    // Steps' middles at 1/4 and 3/4 of the plot's 548 units: 44 + 137, 44 + 411.
    assert.equal(pathOf(steps, scale, (s) => s.documents), "181.0,8.0 455.0,78.0");
  });

  test("the ticks are the peak, its half and 0; the start and the run's length", () => {
    assert.deepEqual(
      ticksOf(90, 20 * 60_000).map((tick) => tick.text),
      ["90", "45", "0", "0:00", "20:00"],
    );
    assert.deepEqual(
      ticksOf(2.5, 3_725_000).map((tick) => tick.text),
      ["2.5", "1.25", "0", "0:00", "1:02:05"],
    );
    const [top, middle, bottom, first, last] = ticksOf(1, 60_000);
    assert.ok(top.y < middle.y && middle.y < bottom.y);
    assert.equal(first.x, FRAME.left);
    assert.equal(last.x, FRAME.width - FRAME.right);
    assert.equal(last.anchor, "end");
  });
});

describe("plot", () => {
  test("the bars' heights are their rates against the peak", () => {
    const known = chartPoints(job(), series([0, 0, 0, 0], [60, 30, 0, 0], [120, 90, 0, 0]));
    const drawn = plot(known);
    assert.equal(drawn.step, 5_000);
    assert.equal(drawn.bars.length, 24);
    const [slow, fast] = [drawn.bars[0], drawn.bars[23]];
    assert.equal(fast.height, PLOT_H);
    assert.equal(fast.y, FRAME.top);
    assert.ok(Math.abs(slow.height - PLOT_H / 2) < 1e-9);
    assert.equal(slow.y + slow.height, FRAME.top + PLOT_H);
    assert.equal(drawn.bars[0].from, 0);
    assert.equal(drawn.bars[23].to, 120_000);
    assert.equal(drawn.average, 45);
    assert.equal(drawn.ticks[0].text, "60");
    // No documents: no line.
    assert.equal(drawn.line, null);
  });

  test("documents and failures come from a recorded series only", () => {
    const recorded = plot(chartPoints(job(), series([0, 0, 0, 0], [30, 30, 15, 1], [60, 60, 30, 2])));
    assert.equal(recorded.line.split(" ").length, recorded.bars.length);
    assert.equal(recorded.failures, 2);
    const known = plot({ points: [[at(0), 0, 0, 0], [at(30), 30, 15, 1], [at(60), 60, 30, 2]], recorded: false });
    assert.equal(known.line, null);
    assert.equal(known.failures, 0);
  });

  test("a run with no pages has a peak of 1 and flat bars", () => {
    const drawn = plot({ points: [[at(0), 0, 0, 0], [at(60), 0, 0, 0]], recorded: true });
    assert.ok(drawn.bars.every((bar) => bar.height === 0 && bar.width >= 1));
    assert.equal(drawn.ticks[0].text, "1");
  });
});

describe("the progress bar", () => {
  test("progress goes from 0 to 100 and no further", () => {
    assert.equal(barValue(0), 0);
    assert.equal(barValue(42.5), 42.5);
    assert.equal(barValue(100), 100);
    assert.equal(barValue(100.4), 100);
    assert.equal(barValue(-3), 0);
  });

  test("a progress not known is none", () => {
    for (const unknown of [null, undefined, Number.NaN, Number.POSITIVE_INFINITY, "50"]) {
      assert.equal(barValue(unknown), null);
    }
  });
});

describe("Readings", () => {
  test("a reading is taken at the time the crawl wrote it, once", () => {
    const readings = new Readings();
    readings.add(job({ updated_at: iso(at(10)), total_pages_crawled: 3 }));
    readings.add(job({ updated_at: iso(at(10)), total_pages_crawled: 4 }));
    readings.add(job({ updated_at: iso(at(5)), total_pages_crawled: 5 }));
    readings.add(job({ is_active: false, updated_at: iso(at(99)), completed_at: iso(at(20)), total_pages_crawled: 6 }));
    readings.add(job({ job_id: "queued", started_at: null }));
    assert.deepEqual(readings.of("j1"), [
      [at(10), 3, 0, 0],
      [at(20), 6, 0, 0],
    ]);
    assert.deepEqual(readings.of("queued"), []);
  });

  test("a job's first reading stays when its oldest others go", () => {
    const readings = new Readings({ maxPoints: 3 });
    for (let s = 1; s <= 5; s += 1) readings.add(job({ updated_at: iso(at(s)), total_pages_crawled: s }));
    assert.deepEqual(
      readings.of("j1").map(([, pages]) => pages),
      [1, 4, 5],
    );
  });

  test("the job read longest ago is forgotten first", () => {
    const readings = new Readings({ maxJobs: 2 });
    for (const id of ["a", "b", "c"]) readings.add(job({ job_id: id }));
    assert.deepEqual(
      ["a", "b", "c"].map((id) => readings.of(id).length),
      [0, 1, 1],
    );
  });
});
