// The one poll loop the job list, the event stream and the nodes panel run.
import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { Poll } from "../../extensions/scrapy_jobstatus/scrapyd/static/js/poll.js";

/* The page's timers and clock, moved by hand. */
function fakeTime(t) {
  const timers = new Map();
  let id = 0;
  const clock = { now: 1_000_000 };
  t.mock.method(globalThis, "setTimeout", (fn, delay) => {
    id += 1;
    timers.set(id, { fn, delay });
    return id;
  });
  t.mock.method(globalThis, "clearTimeout", (timer) => timers.delete(timer));
  t.mock.method(Date, "now", () => clock.now);
  return {
    clock,
    /* The delays of the timers set and not cleared or fired. */
    delays: () => [...timers.values()].map((timer) => timer.delay),
    /* Fires the one timer set. */
    fire() {
      assert.equal(timers.size, 1, "one timer set");
      const [[key, timer]] = timers;
      timers.delete(key);
      timer.fn();
    },
  };
}

/* A run the test ends: poll.now() waits on it. */
function runs() {
  const calls = [];
  const run = (signal) =>
    new Promise((resolve, reject) => {
      calls.push({ signal, resolve, reject });
    });
  return { calls, run };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("Poll", () => {
  let hidden;
  beforeEach(() => {
    hidden = false;
  });
  const options = (more) => ({ every: 2000, hidden: () => hidden, ...more });

  test("runs now, then again every so often", async (t) => {
    const time = fakeTime(t);
    const { calls, run } = runs();
    const poll = new Poll(run, options());
    const done = poll.now();
    assert.equal(calls.length, 1);
    assert.deepEqual(time.delays(), []);
    calls[0].resolve();
    await done;
    assert.deepEqual(time.delays(), [2000]);
    time.fire();
    assert.equal(calls.length, 2);
  });

  test("a run may set the delay before the next", async (t) => {
    const time = fakeTime(t);
    const poll = new Poll(async () => 60_000, options());
    await poll.now();
    assert.deepEqual(time.delays(), [60_000]);
  });

  test("nothing runs while the tab is hidden", async (t) => {
    const time = fakeTime(t);
    const { calls, run } = runs();
    hidden = true;
    const poll = new Poll(run, options());
    await poll.now();
    poll.soon();
    assert.equal(calls.length, 0);
    assert.deepEqual(time.delays(), []);
  });

  test("a tab hidden during a run: no next one", async (t) => {
    const time = fakeTime(t);
    const { calls, run } = runs();
    const poll = new Poll(run, options());
    const done = poll.now();
    hidden = true;
    calls[0].resolve();
    await done;
    assert.deepEqual(time.delays(), []);
  });

  test("a run started over another drops it: one loop goes on", async (t) => {
    const time = fakeTime(t);
    const { calls, run } = runs();
    const poll = new Poll(run, options());
    const first = poll.now();
    const second = poll.now();
    assert.equal(calls[0].signal.aborted, true);
    assert.equal(calls[1].signal.aborted, false);
    calls[1].resolve();
    await second;
    calls[0].resolve();
    await first;
    assert.deepEqual(time.delays(), [2000]);
  });

  test("stop drops the run under way and sets no timer", async (t) => {
    const time = fakeTime(t);
    const { calls, run } = runs();
    const poll = new Poll(run, options());
    const done = poll.now();
    poll.stop();
    assert.equal(calls[0].signal.aborted, true);
    calls[0].resolve();
    await done;
    assert.deepEqual(time.delays(), []);
  });

  test("soon during a run: the next one right after it, a gap after its start", async (t) => {
    const time = fakeTime(t);
    const { calls, run } = runs();
    const poll = new Poll(run, options({ gap: 250 }));
    const done = poll.now();
    time.clock.now += 100;
    poll.soon();
    poll.soon();
    assert.equal(calls.length, 1, "one run at a time");
    calls[0].resolve();
    await done;
    assert.deepEqual(time.delays(), [150]);
  });

  test("soon between runs: the next one at once, gap allowing", async (t) => {
    const time = fakeTime(t);
    const poll = new Poll(async () => undefined, options({ gap: 250 }));
    await poll.now();
    time.clock.now += 1000;
    poll.soon();
    assert.deepEqual(time.delays(), [0]);
    time.fire();
    await settle();
    time.clock.now += 50;
    poll.soon();
    assert.deepEqual(time.delays(), [200]);
  });

  test("a run that fails is reported, and the loop goes on", async (t) => {
    const time = fakeTime(t);
    const poll = new Poll(async () => {
      throw new TypeError("a bug");
    }, options());
    await assert.rejects(poll.now(), TypeError);
    assert.deepEqual(time.delays(), [2000]);
  });
});
