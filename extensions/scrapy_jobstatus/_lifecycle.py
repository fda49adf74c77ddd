"""A crawl's job as the extension sees it: one phase at a time.

The crawl opens its job, tracks it, writes its end and stops its writer; a
job that cannot be opened (or whose monitoring fails) leaves the crawl going
on untracked, its writer stopped. Two paths may end a job (the spider's
close, or the reactor stopping first): the phase says which one owns the
end, and the other waits for it.
"""

from __future__ import annotations

from enum import Enum

from twisted.internet.defer import Deferred


class Phase(Enum):
    NEW = "new"  # the extension is built; the spider is not open
    OPENING = "opening"  # the job is being opened
    TRACKED = "tracked"  # the job is open: counted, written, polled
    ENDING = "ending"  # the job's end is being written
    DONE = "done"  # the writer stopped, the signals given back: nothing is tracked


# Where each phase may go. OPENING to DONE: the job was refused (or its
# opening failed); TRACKED to DONE: its monitoring failed.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.NEW: frozenset({Phase.OPENING, Phase.DONE}),
    Phase.OPENING: frozenset({Phase.TRACKED, Phase.DONE}),
    Phase.TRACKED: frozenset({Phase.ENDING, Phase.DONE}),
    Phase.ENDING: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}
# The phases in the order a job goes through them.
_ORDER = list(Phase)


class LifecycleError(RuntimeError):
    """A move the lifecycle does not allow: a bug, never the user's doing."""


class Lifecycle:
    def __init__(self) -> None:
        self.phase = Phase.NEW
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def __repr__(self) -> str:
        return f"<Lifecycle {self.phase.value}>"

    def can(self, phase: Phase) -> bool:
        return phase in TRANSITIONS[self.phase]

    def advance(self, phase: Phase) -> None:
        if not self.can(phase):
            raise LifecycleError(f"a job cannot go from {self.phase.value} to {phase.value}")
        self.phase = phase
        rank = _ORDER.index(phase)
        ready = [d for at, d in self._waiting if at <= rank]
        self._waiting = [(at, d) for at, d in self._waiting if at > rank]
        for d in ready:
            d.callback(None)

    def reached(self, phase: Phase) -> bool:
        """Whether the lifecycle is at ``phase`` or further along."""
        return _ORDER.index(self.phase) >= _ORDER.index(phase)

    def when(self, phase: Phase) -> Deferred[None]:
        """Fires once the lifecycle is at ``phase`` or further along (at
        once if it is)."""
        d: Deferred[None] = Deferred()
        if self.reached(phase):
            d.callback(None)
        else:
            self._waiting.append((_ORDER.index(phase), d))
        return d
