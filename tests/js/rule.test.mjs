// A schedule's rule in words, as the schedules panel shows it.
import assert from "node:assert/strict";
import { test } from "node:test";

import { cronInWords, everyInWords, joinWords, parseField, ruleInWords } from "../../extensions/scrapy_jobstatus/scrapyd/static/js/rule.js";

const check = (cases, zone) => {
  for (const [cron, words] of cases) assert.equal(cronInWords(cron, zone), words, cron);
};

test("a period in seconds is said in its largest whole unit", () => {
  const cases = [
    [1, "every second"],
    [30, "every 30 seconds"],
    [60, "every minute"],
    [90, "every 90 seconds"],
    [300, "every 5 minutes"],
    [5400, "every 90 minutes"],
    [3600, "every hour"],
    [7200, "every 2 hours"],
    [86400, "every day"],
    [604800, "every 7 days"],
    [0.5, "every 0.5 seconds"],
  ];
  for (const [seconds, words] of cases) assert.equal(everyInWords(seconds), words, `${seconds}`);
});

test("times of day name their zone, UTC when none is given", () => {
  check([
    ["0 2 * * *", "every day at 02:00 UTC"],
    ["30 14 * * *", "every day at 14:30 UTC"],
    ["0 8,20 * * *", "every day at 08:00 and 20:00 UTC"],
    ["0,30 9 * * *", "every day at 09:00 and 09:30 UTC"],
    ["0 */6 * * *", "every day at 00:00, 06:00, 12:00 and 18:00 UTC"],
    ["0 9-17/2 * * *", "every day at 09:00, 11:00, 13:00, 15:00 and 17:00 UTC"],
  ]);
  assert.equal(cronInWords("0 2 * * *", "Europe/Paris"), "every day at 02:00 Europe/Paris");
  assert.equal(ruleInWords({ cron: "0 2 * * *", timezone: "Europe/Paris" }), "every day at 02:00 Europe/Paris");
});

test("periods shorter than a day", () => {
  check([
    ["* * * * *", "every minute"],
    ["*/5 * * * *", "every 5 minutes"],
    ["*/1 * * * *", "every minute"],
    ["0 * * * *", "at minute 0 of every hour"],
    ["15 * * * *", "at minute 15 of every hour"],
    ["0,30 * * * *", "at minutes 0 and 30 of every hour"],
    ["0 */2 * * *", "at minute 0 of every 2 hours"],
    ["*/15 9-17 * * *", "every 15 minutes from 09:00 to 17:45 UTC"],
    ["30 9-17 * * *", "every hour from 09:30 to 17:30 UTC"],
  ]);
});

test("days of the week, Monday first, with names or numbers", () => {
  check([
    ["0 9 * * 1-5", "every weekday at 09:00 UTC"],
    ["0 9 * * MON-FRI", "every weekday at 09:00 UTC"],
    ["0 0 * * 0", "every Sunday at 00:00 UTC"],
    ["0 0 * * 7", "every Sunday at 00:00 UTC"],
    ["0 0 * * sun", "every Sunday at 00:00 UTC"],
    ["0 10 * * 1,3,5", "every Monday, Wednesday and Friday at 10:00 UTC"],
    ["0 10 * * 0,6", "every Saturday and Sunday at 10:00 UTC"],
    ["0 10 * * 2-4", "every Tuesday to Thursday at 10:00 UTC"],
    ["0 10 * * 5-7", "every Friday to Sunday at 10:00 UTC"],
    ["0 10 * * 0-6", "every day at 10:00 UTC"],
    ["*/15 9-17 * * 1-5", "on weekdays, every 15 minutes from 09:00 to 17:45 UTC"],
    ["*/5 * * * 1", "on Monday, every 5 minutes (UTC)"],
  ]);
});

test("days of the month and months", () => {
  check([
    ["0 0 1 * *", "on day 1 of every month at 00:00 UTC"],
    ["0 6 1,15 * *", "on days 1 and 15 of every month at 06:00 UTC"],
    ["0 0 1 1 *", "every year on January 1 at 00:00 UTC"],
    ["0 0 1 JAN,JUL *", "on day 1 of January and July at 00:00 UTC"],
    ["0 2 * 12 *", "every day in December at 02:00 UTC"],
    ["0 2 * 12 1", "every Monday in December at 02:00 UTC"],
  ]);
});

test("cron's names for common rules", () => {
  check([
    ["@hourly", "at minute 0 of every hour"],
    ["@daily", "every day at 00:00 UTC"],
    ["@midnight", "every day at 00:00 UTC"],
    ["@weekly", "every Sunday at 00:00 UTC"],
    ["@monthly", "on day 1 of every month at 00:00 UTC"],
    ["@yearly", "every year on January 1 at 00:00 UTC"],
    ["@annually", "every year on January 1 at 00:00 UTC"],
  ]);
  assert.equal(cronInWords("@daily", "America/New_York"), "every day at 00:00 America/New_York");
});

test("six fields: the seconds are the first", () => {
  check([
    ["*/10 * * * * *", "every 10 seconds"],
    ["* * * * * *", "every second"],
    ["15 30 2 * * *", "every day at 02:30:15 UTC"],
    ["0 0 2 * * *", "every day at 02:00 UTC"],
    ["0 */5 * * * *", "every 5 minutes"],
  ]);
});

test("any other expression is shown as written, with its zone", () => {
  check(
    [
      ["0 0 L * *", "0 0 L * * (Europe/Paris)"],
      ["0 0 1,15 * 1", "0 0 1,15 * 1 (Europe/Paris)"],
      ["0 0 * * 1#2", "0 0 * * 1#2 (Europe/Paris)"],
      ["0 1-23/2 * * *", "0 1-23/2 * * * (Europe/Paris)"],
      ["*/5 */2 * * *", "*/5 */2 * * * (Europe/Paris)"],
      ["*/30 * 5 * * *", "*/30 * 5 * * * (Europe/Paris)"],
      ["*/30 5 * * * *", "*/30 5 * * * * (Europe/Paris)"],
      ["0 25 * * *", "0 25 * * * (Europe/Paris)"],
      ["0  2 *  * *", "every day at 02:00 Europe/Paris"],
      ["@reboot", "@reboot (Europe/Paris)"],
      ["not a rule", "not a rule (Europe/Paris)"],
      ["1 2 3 4 5 6 7", "1 2 3 4 5 6 7 (Europe/Paris)"],
    ],
    "Europe/Paris",
  );
});

test("a rule with neither cron nor every is a dash", () => {
  assert.equal(ruleInWords({}), "—");
  assert.equal(ruleInWords({ cron: "", every: null }), "—");
  assert.equal(ruleInWords({ every: 30, cron: null }), "every 30 seconds");
});

test("a field is the numbers it takes", () => {
  const minute = { min: 0, max: 59 };
  assert.deepEqual(parseField("*/20", minute).values, [0, 20, 40]);
  assert.equal(parseField("*/20", minute).step, 20);
  assert.deepEqual(parseField("5/20", minute).values, [5, 25, 45]);
  assert.equal(parseField("5/20", minute).step, null);
  assert.deepEqual(parseField("1-3,10", minute).values, [1, 2, 3, 10]);
  assert.deepEqual(parseField("1-3,10", minute).ranges, [[1, 3]]);
  assert.equal(parseField("0-59", minute).any, true);
  for (const bad of ["60", "-1", "5-1", "a", "*-3", "1/0", "", "1,,2"]) assert.equal(parseField(bad, minute), null, bad);
});

test("lists read as a sentence", () => {
  assert.equal(joinWords([]), "");
  assert.equal(joinWords(["a"]), "a");
  assert.equal(joinWords(["a", "b"]), "a and b");
  assert.equal(joinWords(["a", "b", "c"]), "a, b and c");
});
