"""A crawl's job as the extension sees it: one phase at a time, moved only
along its transitions; its crawls are tests/test_crawl_lifecycle.py's."""

from __future__ import annotations

import pytest

from scrapy_jobstatus._lifecycle import TRANSITIONS, Lifecycle, LifecycleError, Phase

# Every path a crawl's job takes, start to end.
PATHS = {
    "a job tracked to its end": [Phase.OPENING, Phase.TRACKED, Phase.ENDING, Phase.DONE],
    "a job refused at its opening": [Phase.OPENING, Phase.DONE],
    "a job whose monitoring failed while it ran": [Phase.OPENING, Phase.TRACKED, Phase.DONE],
    "a crawl closed before its spider opened": [Phase.DONE],
}


def moved(*phases: Phase) -> Lifecycle:
    lifecycle = Lifecycle()
    for phase in phases:
        lifecycle.advance(phase)
    return lifecycle


@pytest.mark.parametrize("path", list(PATHS.values()), ids=list(PATHS))
def test_every_path_of_a_crawl_is_allowed(path: list[Phase]) -> None:
    assert moved(*path).phase is Phase.DONE


def test_a_new_lifecycle_is_new() -> None:
    assert Lifecycle().phase is Phase.NEW


@pytest.mark.parametrize(
    ("path", "to"),
    [
        ([], Phase.TRACKED),  # a job is tracked only once opened
        ([], Phase.ENDING),
        ([Phase.OPENING], Phase.ENDING),  # an end is written only of a tracked job
        ([Phase.OPENING, Phase.TRACKED], Phase.OPENING),  # a job opens once
        ([Phase.OPENING, Phase.TRACKED, Phase.ENDING], Phase.ENDING),  # one path ends it
        ([Phase.OPENING, Phase.TRACKED, Phase.ENDING], Phase.TRACKED),
        ([Phase.DONE], Phase.OPENING),  # nothing after the end
        ([Phase.DONE], Phase.DONE),
    ],
)
def test_a_move_off_the_transitions_is_refused_and_changes_nothing(
    path: list[Phase], to: Phase
) -> None:
    lifecycle = moved(*path)
    before = lifecycle.phase
    assert not lifecycle.can(to)
    with pytest.raises(LifecycleError, match=f"from {before.value} to {to.value}"):
        lifecycle.advance(to)
    assert lifecycle.phase is before


def test_done_is_the_only_phase_with_no_way_out_and_every_phase_reaches_it() -> None:
    assert [phase for phase, nexts in TRANSITIONS.items() if not nexts] == [Phase.DONE]

    def reaches_done(phase: Phase) -> bool:
        return phase is Phase.DONE or any(reaches_done(n) for n in TRANSITIONS[phase])

    assert all(reaches_done(phase) for phase in Phase)


def test_a_wait_for_a_phase_ends_when_it_is_reached() -> None:
    lifecycle = moved(Phase.OPENING)
    fired: list[Phase] = []
    lifecycle.when(Phase.TRACKED).addCallback(lambda _: fired.append(lifecycle.phase))
    assert fired == []
    lifecycle.advance(Phase.TRACKED)
    assert fired == [Phase.TRACKED]


def test_a_wait_ends_at_once_when_the_phase_is_reached_or_passed() -> None:
    lifecycle = moved(Phase.OPENING, Phase.TRACKED, Phase.ENDING)
    assert lifecycle.when(Phase.TRACKED).called
    assert lifecycle.when(Phase.ENDING).called
    assert not lifecycle.when(Phase.DONE).called


def test_a_wait_for_the_opening_to_end_ends_whichever_way_it_ends() -> None:
    # The reactor stopping waits for the opening: refused, it goes to DONE.
    lifecycle = moved(Phase.OPENING)
    opened = lifecycle.when(Phase.TRACKED)
    done = lifecycle.when(Phase.DONE)
    lifecycle.advance(Phase.DONE)
    assert opened.called and done.called


def test_reached_follows_the_order_of_the_phases() -> None:
    lifecycle = moved(Phase.OPENING, Phase.TRACKED)
    assert lifecycle.reached(Phase.NEW) and lifecycle.reached(Phase.TRACKED)
    assert not lifecycle.reached(Phase.ENDING)
