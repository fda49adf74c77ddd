// The dashboard's event stream behind the oldest event the node keeps.
import assert from "node:assert/strict";
import { test } from "node:test";

// api.js reads the page's body as it loads.
globalThis.document = { body: { dataset: {} }, hidden: false };
const { EVENTS_GAP_MS, EventStream } = await import("../../extensions/scrapy_jobstatus/scrapyd/static/js/events.js");

/* fetch answering each request with the next of ``answers``; the URLs asked. */
function fakeFetch(t, answers) {
  const urls = [];
  t.mock.method(globalThis, "fetch", async (url) => {
    urls.push(url);
    const [code, body] = answers.shift();
    return new Response(JSON.stringify(body), { status: code });
  });
  return urls;
}

/* The stream's next run, at once rather than after its timer (the
 * requests' own timeouts never fire). */
function nextRun(t) {
  const timers = [];
  t.mock.method(globalThis, "setTimeout", (fn, delay) => {
    timers.push({ fn, delay });
    return timers.length;
  });
  t.mock.method(globalThis, "clearTimeout", () => {});
  return async () => {
    const next = timers.filter((timer) => timer.delay === EVENTS_GAP_MS);
    assert.equal(next.length, 1, "one run planned");
    timers.length = 0;
    await next[0].fn();
  };
}

test("a 410 reloads the page's jobs once and follows from the latest event", async (t) => {
  const urls = fakeFetch(t, [
    [200, { status: "ok", events: [], last_id: 5 }],
    [410, { status: "error", message: "pruned", oldest_id: 40 }],
    [200, { status: "ok", events: [], last_id: 90 }],
    [200, { status: "ok", events: [{ id: 91, job_id: "a" }], last_id: 91 }],
  ]);
  const run = nextRun(t);
  let missed = 0;
  const seen = [];
  const stream = new EventStream({ onEvents: (events) => seen.push(...events), onState: () => {}, onMissed: () => (missed += 1) });
  await stream.poll.now();
  await run(); // since=5: 410
  assert.equal(missed, 1);
  await run(); // without since: the latest id
  await run(); // since=90
  assert.deepEqual(
    urls.map((url) => new URLSearchParams(url.split("?")[1] || "").get("since")),
    [null, "5", null, "90"],
  );
  assert.equal(missed, 1);
  assert.deepEqual(seen.map((event) => event.id), [91]);
  stream.stop();
});
