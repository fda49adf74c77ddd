// How the page writes numbers and times: the chart's labels and the table's cells.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  fmtAgo,
  fmtDuration,
  fmtElapsed,
  fmtInt,
  fmtPercent,
  fmtRate,
  knownStatus,
} from "../../extensions/scrapy_jobstatus/scrapyd/static/js/format.js";

test("a rate has about three significant digits, no trailing zeros", () => {
  const cases = [
    [0, "0"],
    [0.004, "0"],
    [0.5, "0.5"],
    [1.25, "1.25"],
    [9.999, "10"],
    [10, "10"],
    [12.34, "12.3"],
    [99.96, "100"],
    [100.4, "100"],
    [1234.5, "1235"],
  ];
  for (const [rate, text] of cases) assert.equal(fmtRate(rate), text, `${rate}`);
});

test("a time since the start reads as a clock", () => {
  assert.equal(fmtElapsed(0), "0:00");
  assert.equal(fmtElapsed(59_499), "0:59");
  assert.equal(fmtElapsed(20 * 60_000), "20:00");
  assert.equal(fmtElapsed(3_600_000), "1:00:00");
  assert.equal(fmtElapsed(3_725_000), "1:02:05");
});

test("a duration is in its largest two units", () => {
  assert.equal(fmtDuration(4.25), "4.3 s");
  assert.equal(fmtDuration(42.9), "42 s");
  assert.equal(fmtDuration(605), "10 m 05 s");
  assert.equal(fmtDuration(7260), "2 h 01 m");
  assert.equal(fmtDuration(90_000), "1 d 1 h");
  assert.equal(fmtDuration(-3), "0.0 s");
  assert.equal(fmtDuration(null), "—");
  assert.equal(fmtDuration(Number.NaN), "—");
});

test("a percentage has a decimal below 10 only", () => {
  assert.equal(fmtPercent(0), "0%");
  assert.equal(fmtPercent(3.14), "3.1%");
  assert.equal(fmtPercent(42.9), "42%");
  assert.equal(fmtPercent(100), "100%");
});

test("an age is in one unit", () => {
  assert.equal(fmtAgo(-2), "0 s ago");
  assert.equal(fmtAgo(59), "59 s ago");
  assert.equal(fmtAgo(3630), "1 h ago");
  assert.equal(fmtAgo(2 * 86_400), "2 d ago");
});

test("counts have separators, and a missing one is a dash", () => {
  assert.equal(fmtInt(1234567), "1,234,567");
  assert.equal(fmtInt(undefined), "—");
});

test("a status the page does not know is unknown", () => {
  assert.equal(knownStatus("paused"), "paused");
  assert.equal(knownStatus("<img>"), "unknown");
  assert.equal(knownStatus(undefined), "unknown");
});
