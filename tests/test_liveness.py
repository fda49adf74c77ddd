"""The rule by which a node may declare another dead, on a fake clock: only
after it has itself been connected to the store for a whole node_timeout, its
beats going through without a gap."""

from __future__ import annotations

from scrapy_jobstatus._store import Liveness

TIMEOUT = 10.0
BEAT = 5.0


def beats(liveness: Liveness, start: float, end: float, every: float = BEAT) -> float:
    """Beats every ``every`` seconds from ``start`` to ``end``; the last one's time."""
    at = start
    while at <= end:
        liveness.beat(at)
        at += every
    return at - every


def test_a_node_judges_others_once_connected_a_whole_timeout():
    liveness = Liveness(TIMEOUT, max_gap=2 * BEAT)
    assert not liveness.may_judge(1000.0)  # never beat
    liveness.beat(1000.0)
    assert not liveness.may_judge(1000.0)
    last = beats(liveness, 1005.0, 1009.9)
    assert last == 1005.0 and not liveness.may_judge(1009.9)
    liveness.beat(1010.0)
    assert liveness.may_judge(1010.0)
    assert liveness.may_judge(beats(liveness, 1015.0, 2000.0))


def test_a_failed_beat_starts_the_window_again_however_long_connected_before():
    liveness = Liveness(TIMEOUT, max_gap=2 * BEAT)
    beats(liveness, 0.0, 3600.0)
    assert liveness.may_judge(3600.0)
    liveness.lost()  # the store went away: nobody could write a heartbeat
    assert not liveness.may_judge(3605.0)
    # Back after an outage of any length: the heartbeats written during it
    # are not held against anyone for a whole timeout.
    liveness.beat(7200.0)
    assert not liveness.may_judge(7205.0)
    liveness.beat(7205.0)
    assert not liveness.may_judge(7209.0)
    liveness.beat(7210.0)
    assert liveness.may_judge(7210.0)


def test_a_beat_that_hung_is_a_gap_too():
    liveness = Liveness(TIMEOUT, max_gap=2 * BEAT)
    beats(liveness, 0.0, 100.0)
    # Its connection held (a partition) and then went through, 40 s on.
    liveness.beat(140.0)
    assert not liveness.may_judge(145.0)
    liveness.beat(145.0)
    liveness.beat(150.0)
    assert liveness.may_judge(150.0)


def test_beats_a_little_late_keep_the_window():
    liveness = Liveness(TIMEOUT, max_gap=2 * BEAT)
    for at in (0.0, 6.0, 13.5, 20.0):  # a busy round now and then, no beat missed
        liveness.beat(at)
    assert liveness.may_judge(20.0) and liveness.connected_since == 0.0


def test_a_store_clock_going_back_starts_the_window_again():
    liveness = Liveness(TIMEOUT, max_gap=2 * BEAT)
    beats(liveness, 100.0, 200.0)
    liveness.beat(150.0)  # a failover to a server whose clock is behind
    assert liveness.connected_since == 150.0 and not liveness.may_judge(155.0)
