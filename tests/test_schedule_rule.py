"""The rule of a periodic schedule's ticks, and what a claim of due ticks
does, on a fake clock: times are given, never read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scrapy_jobstatus._schedule import (
    LATE_AFTER,
    CatchUp,
    InvalidSchedule,
    Rule,
    job_id_for,
    plan_ticks,
    run_job_id,
    validate_name,
)


def ts(text: str) -> float:
    """An instant written in UTC: '2026-03-29T00:30:00'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def utc(instant: float | None) -> str | None:
    if instant is None:
        return None
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def ticks(rule: Rule, after: str, count: int) -> list[str | None]:
    found, instant = [], ts(after)
    for _ in range(count):
        nxt = rule.next_after(instant)
        found.append(utc(nxt))
        assert nxt is not None
        instant = nxt
    return found


def test_a_daily_cron_ticks_at_its_wall_clock_time_in_its_zone() -> None:
    rule = Rule.parse("0 2 * * *", "Europe/Paris", None)
    # 02:00 in Paris is 01:00 UTC in winter, 00:00 UTC in summer.
    assert ticks(rule, "2026-12-07T12:00:00", 2) == ["2026-12-08T01:00:00", "2026-12-09T01:00:00"]
    assert ticks(rule, "2026-07-01T12:00:00", 1) == ["2026-07-02T00:00:00"]


def test_a_time_skipped_by_the_spring_change_makes_no_tick_that_day() -> None:
    # Europe/Paris, 29 March 2026: 02:00 CET becomes 03:00 CEST; 02:30 never happens.
    rule = Rule.parse("30 2 * * *", "Europe/Paris", None)
    assert ticks(rule, "2026-03-27T12:00:00", 3) == [
        "2026-03-28T01:30:00",  # 02:30 CET
        "2026-03-30T00:30:00",  # 02:30 CEST: the 29th has none
        "2026-03-31T00:30:00",
    ]


def test_a_time_repeated_by_the_autumn_change_ticks_once() -> None:
    # Europe/Paris, 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    rule = Rule.parse("30 2 * * *", "Europe/Paris", None)
    assert ticks(rule, "2026-10-23T12:00:00", 3) == [
        "2026-10-24T00:30:00",
        "2026-10-25T00:30:00",  # the first 02:30 (CEST) only
        "2026-10-26T01:30:00",
    ]


def test_an_hourly_rule_ticks_each_wall_clock_hour_once_across_both_changes() -> None:
    rule = Rule.parse("@hourly", "Europe/Paris", None)
    # Spring: 01:00 CET, then 03:00 CEST (02:00 does not happen): one hour apart.
    assert ticks(rule, "2026-03-28T23:30:00", 3) == [
        "2026-03-29T00:00:00",
        "2026-03-29T01:00:00",
        "2026-03-29T02:00:00",
    ]
    # Autumn: 02:00 CEST, then 02:00 CET repeated is skipped, then 03:00 CET.
    assert ticks(rule, "2026-10-24T23:30:00", 3) == [
        "2026-10-25T00:00:00",  # 02:00 CEST
        "2026-10-25T02:00:00",  # 03:00 CET
        "2026-10-25T03:00:00",
    ]


def test_six_fields_put_the_seconds_first() -> None:
    rule = Rule.parse("*/20 * * * * *", None, None)
    assert ticks(rule, "2026-12-08T02:00:05", 3) == [
        "2026-12-08T02:00:20",
        "2026-12-08T02:00:40",
        "2026-12-08T02:01:00",
    ]


def test_every_ticks_at_multiples_of_its_seconds_since_the_epoch() -> None:
    rule = Rule.parse(None, None, "2")
    assert rule.next_after(ts("2026-12-08T02:00:00")) == ts("2026-12-08T02:00:02")
    assert rule.next_after(ts("2026-12-08T02:00:01.5")) == ts("2026-12-08T02:00:02")
    assert rule.describe() == "every 2 seconds"
    assert Rule.parse(None, None, "3600").describe() == "every hour"


def test_rules_in_words() -> None:
    assert Rule.parse("0 2 * * *", "Europe/Paris", None).describe() == (
        "every day at 02:00 (Europe/Paris)"
    )
    assert Rule.parse("15 8 * * 1", None, None).describe() == "every Monday at 08:15 (UTC)"
    assert Rule.parse("@weekly", None, None).describe() == "every Sunday at 00:00 (UTC)"
    assert Rule.parse("0 0 1,15 * *", None, None).describe() == "cron 0 0 1,15 * * (UTC)"


@pytest.mark.parametrize(
    ("cron", "timezone", "every", "message"),
    [
        ("61 * * * *", None, None, "cron: '61 * * * *' is not a valid cron expression"),
        ("* * *", None, None, "has 3 fields"),
        ("0 0 30 2 *", None, None, "is not a valid cron expression"),  # never happens
        ("0 2 * * *", "Mars/Olympus", None, "timezone: 'Mars/Olympus' is not an IANA time zone"),
        ("0 2 * * *", "../../etc/passwd", None, "is not an IANA time zone"),
        (None, None, "0", "every: must be 1 to"),
        (None, None, "1.5", "every: '1.5' is not a whole number of seconds"),
        (None, "Europe/Paris", "60", "timezone goes with cron"),
        (None, None, None, "give either cron"),
        ("* * * * *", None, "60", "give either cron"),
    ],
)
def test_bad_rules_are_refused_in_one_line(
    cron: str | None, timezone: str | None, every: str | None, message: str
) -> None:
    with pytest.raises(InvalidSchedule) as e:
        Rule.parse(cron, timezone, every)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_names_are_those_of_a_job_id() -> None:
    assert validate_name("nightly.docs-2") == "nightly.docs-2"
    for bad in ("", "a/b", "-x", "a b", "x" * 101, "é"):
        with pytest.raises(InvalidSchedule, match="is not a schedule name"):
            validate_name(bad)


def test_a_ticks_job_id_is_the_name_and_the_tick() -> None:
    tick = ts("2026-12-08T02:00:00")
    assert job_id_for("nightly", tick) == "nightly-2026-12-08T02:00:00Z"
    assert run_job_id("nightly", tick + 0.25) == "nightly-2026-12-08T02:00:00.250Z"


def test_a_tick_claimed_on_time_fires_and_none_is_missed() -> None:
    rule = Rule(every=2)
    tick = ts("2026-12-08T02:00:00")
    plan = plan_ticks(rule, tick, tick + 0.3, CatchUp.NONE, None)
    assert (plan.fire, plan.missed, plan.next_tick) == ([tick], 0, tick + 2)


def test_ticks_older_than_the_grace_are_missed_and_those_on_time_fire() -> None:
    rule = Rule(every=2)
    first = ts("2026-12-08T02:00:00")
    now = first + 20.5  # ticks at 0, 2, ... 20: those from 16 on are on time
    plan = plan_ticks(rule, first, now, CatchUp.NONE, None)
    assert plan.fire == [first + 16, first + 18, first + 20]
    assert (plan.missed, plan.last_missed) == (8, first + 14)
    assert plan.next_tick == first + 22


def test_catch_up_none_runs_nothing_for_missed_ticks() -> None:
    rule = Rule.parse("0 2 * * *", "Europe/Paris", None)
    first = ts("2026-12-06T01:00:00")
    now = ts("2026-12-08T09:00:00")  # the nodes were down across three ticks
    plan = plan_ticks(rule, first, now, CatchUp.NONE, None)
    assert plan.fire == []
    assert (plan.missed, utc(plan.last_missed)) == (3, "2026-12-08T01:00:00")
    assert utc(plan.next_tick) == "2026-12-09T01:00:00"


def test_catch_up_latest_runs_the_latest_missed_tick_within_its_deadline() -> None:
    rule = Rule.parse("0 2 * * *", "Europe/Paris", None)
    first = ts("2026-12-06T01:00:00")
    now = ts("2026-12-08T01:30:00")
    plan = plan_ticks(rule, first, now, CatchUp.LATEST, 3600)
    assert [utc(t) for t in plan.fire] == ["2026-12-08T01:00:00"]
    assert (plan.missed, utc(plan.last_missed)) == (2, "2026-12-07T01:00:00")
    # Older than its deadline: missed too.
    late = plan_ticks(rule, first, ts("2026-12-08T03:00:00"), CatchUp.LATEST, 3600)
    assert (late.fire, late.missed) == ([], 3)
    # No deadline: the latest runs however late.
    assert plan_ticks(rule, first, ts("2026-12-08T23:00:00"), CatchUp.LATEST, None).fire


def test_the_grace_is_a_few_seconds() -> None:
    rule = Rule(every=60)
    tick = ts("2026-12-08T02:00:00")
    assert plan_ticks(rule, tick, tick + LATE_AFTER, CatchUp.NONE, None).fire == [tick]
    assert plan_ticks(rule, tick, tick + LATE_AFTER + 0.1, CatchUp.NONE, None).missed == 1


def test_catch_up_latest_runs_the_latest_missed_tick_beside_those_on_time() -> None:
    rule = Rule(every=2)
    first = ts("2026-12-08T02:00:00")
    plan = plan_ticks(rule, first, first + 12.5, CatchUp.LATEST, 60)
    # 0 to 6 late (6 runs, 0 to 4 missed), 8 to 12 on time.
    assert plan.fire == [first + 6, first + 8, first + 10, first + 12]
    assert (plan.missed, plan.last_missed) == (3, first + 4)
