"""Has a file settled? Observations of the landing zone, judged against an injected clock.

A file is taken once it is complete and stable:

- complete: its writer closed it after its last write (Linux reports close-after-write), or it
  was renamed into place, or it appeared whole and is not empty (a rename from outside the
  watched tree shows only as a creation), or a scan found it (no event tells more);
- stable: its size and modification time stayed unchanged for ``window`` seconds, judged from the
  last event and from the daemon's own ``stat`` of the file, whichever saw a change last.

Settling by evidence: a close after writing, or a rename into the tree, is strong evidence that a
file is whole. Such a file needs only ``confirm`` seconds unchanged (``CONFIRM_SECONDS``), not
the whole window. The short confirmation is for that one evidence only: a file seen without it
(polling, a network mount, the backstop scan, a rename from outside that shows as a creation)
keeps the full window, and so does a file written to again after it was closed (a writer that
reopens it has shown that its close does not mean the end).

A file written to and never seen closed is taken anyway once it stayed unchanged for
``stale_after`` seconds: a lost close event must not hold a file back for ever.

The observer thread records what it saw (``Tracker.observe``, ``Tracker.forget``); the daemon's
loop takes what settled (``Tracker.take_settled``). Time and file state come from injected
functions, so the rules are tested without sleeping and without a disk.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Literal, NamedTuple

Signature = tuple[int, int]
"""(size in bytes, modification time in ns) of a file."""

EventKind = Literal["created", "modified", "closed", "moved_in"]

CONFIRM_SECONDS = 0.4
"""How long a file closed after writing (or renamed into the tree) must stay unchanged.

Longer than the pause of a writer that closes and at once reopens to append (300 ms is the case
tested): its reopen then falls within the confirmation, the file waits for the next close, and it
is loaded once, whole. Shorter than the 1 s default window, which the issue's latency target
(drop to models within 1 s at the median) cannot afford."""


class State(Enum):
    WRITING = "writing"
    """Written to, and no close seen since the last write."""
    CLOSED = "closed"
    """Closed after writing, or renamed into place."""
    CREATED = "created"
    """Appeared, no write seen: a rename from outside, or a writer that has not written yet."""
    SEEN = "seen"
    """Found by a scan, or changed on a backend that reports no close."""


@dataclass(frozen=True)
class Rules:
    window: float
    """Seconds a complete file must stay unchanged."""
    stale_after: float
    """Seconds after which a file never seen closed (or still empty) is taken anyway."""
    gather: float = 0.0
    """How long a settled file may wait for others that are about to settle (one batch, one build)."""
    confirm: float | None = None
    """Seconds a file closed after writing (or renamed into the tree) must stay unchanged; None:
    the full ``window`` (the backend reports no close, as with polling)."""

    @property
    def confirm_window(self) -> float:
        return self.window if self.confirm is None else min(self.confirm, self.window)


@dataclass
class Observation:
    path: str
    origin: str
    """Who found the file first: ``event``, ``startup`` (backlog) or ``reconcile`` (backstop scan)."""
    state: State
    first_seen: float
    last_activity: float
    """Clock time of the last event, or of the file's modification time when a scan found it."""
    signature: Signature | None = None
    signature_since: float = float("-inf")
    """Clock time at which the current signature was first seen (a change the stat noticed)."""
    checked_at: float = float("-inf")
    """Clock time of the last stat."""
    last_event: float = float("-inf")
    """Clock time of the last event (a scan is none: a change after it is not explained by one)."""
    reopened: bool = False
    """Written to again after a close: its next close is no proof of the end (full window)."""

    @property
    def waits_for_writer(self) -> bool:
        """True while the file may still be half written: no close seen, or still empty."""
        if self.state is State.WRITING:
            return True
        return self.state is State.CREATED and self.signature is not None and self.signature[0] == 0


@dataclass(frozen=True)
class Settled:
    path: str
    origin: str
    first_seen: float
    settled_at: float
    """Clock time at which the file had settled (its last change plus the window)."""
    forced: bool = False
    """Taken after ``stale_after`` without a close being seen."""


class DropTimes(NamedTuple):
    """Wall-clock times of a file on its way to the models (the drop-to-ready metrics)."""

    first_seen: float
    """Its first event, or the scan that found it."""
    settled: float
    """The moment it had settled; not finite when unknown (a batch put back and taken again)."""


def settle_time(obs: Observation, rules: Rules) -> float:
    """The clock time at which ``obs`` is settled if nothing changes from now on."""
    stable_since = max(obs.last_activity, obs.signature_since)
    if obs.waits_for_writer:
        return stable_since + rules.stale_after
    if obs.state is State.CLOSED and not obs.reopened:
        return stable_since + rules.confirm_window
    return stable_since + rules.window


def file_signature(path: str) -> Signature | None:
    """(size, mtime_ns) of a file; None when it is gone. Unreadable metadata is a fixed value:
    the file then settles and the pipeline records why it cannot be read."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return (-1, -1)
    return (info.st_size, info.st_mtime_ns)


class Tracker:
    """Thread-safe observations of the files that are not settled yet."""

    def __init__(
        self,
        rules: Rules,
        *,
        expects_close: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        stat: Callable[[str], Signature | None] = file_signature,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._rules = rules
        self._expects_close = expects_close
        self._clock = clock
        self._wall = wall_clock
        self._stat = stat
        self._wake = wake
        self._lock = threading.Lock()
        self._files: dict[str, Observation] = {}

    # -- called by the observer thread ------------------------------------------------------------

    def observe(self, path: str, kind: EventKind) -> None:
        """Record an event on a file of the landing zone."""
        now = self._clock()
        with self._lock:
            obs = self._files.get(path)
            new = obs is None
            if obs is None:
                obs = self._files[path] = Observation(path, "event", State.SEEN, now, now)
            before = obs.state
            obs.last_activity = obs.last_event = now
            obs.state = self._state_after(kind)
            if before is State.CLOSED and kind == "modified":
                obs.reopened = True
            changed = new or obs.state is not before
        if changed and self._wake is not None:
            self._wake()

    def _state_after(self, kind: EventKind) -> State:
        if kind == "modified":
            return State.WRITING if self._expects_close else State.SEEN
        if kind == "created":
            return State.CREATED
        return State.CLOSED

    def forget(self, path: str) -> None:
        """The file was deleted or moved away."""
        with self._lock:
            self._files.pop(path, None)

    # -- called by the daemon's loop ----------------------------------------------------------------

    def set_rules(self, rules: Rules, *, expects_close: bool) -> None:
        """Switch rules (say, to polling after the event check failed)."""
        with self._lock:
            self._rules = rules
            self._expects_close = expects_close
            if not expects_close:
                for obs in self._files.values():
                    if obs.state is State.WRITING:
                        obs.state = State.SEEN

    def seed(self, path: str, origin: str) -> bool:
        """A scan found the file: it settles once unchanged for the window since its mtime."""
        signature = self._stat(path)
        if signature is None:
            return False
        now = self._clock()
        age = max(0.0, self._wall() - signature[1] / 1e9) if signature[1] >= 0 else 0.0
        with self._lock:
            if path in self._files:
                return False
            changed_at = now - age
            self._files[path] = Observation(
                path, origin, State.SEEN, now, changed_at, signature, changed_at, checked_at=now
            )
        return True

    def restore(self, items: Iterable[Settled]) -> None:
        """Put back files taken for a batch that could not run; newer observations win."""
        with self._lock:
            for item in items:
                if item.path not in self._files:
                    self._files[item.path] = Observation(
                        item.path, item.origin, State.SEEN, item.first_seen, float("-inf")
                    )

    def take_settled(self) -> tuple[list[Settled], float | None]:
        """Remove and return the files that settled, and the next clock time worth a look.

        When some files have settled and others are about to (complete, within ``gather``), the
        settled ones wait for them: a burst becomes one batch and one build, not many.
        """
        now = self._clock()
        signatures = {path: self._stat(path) for path in self.paths()}
        with self._lock:
            self._apply_signatures(signatures, now)
            ready: list[tuple[Observation, float]] = []
            soon: list[float] = []
            later: list[float] = []
            for obs in self._files.values():
                due = settle_time(obs, self._rules)
                if due <= now:
                    ready.append((obs, due))
                else:
                    (later if obs.waits_for_writer else soon).append(due)
            if ready and soon:
                hold_until = min(due for _, due in ready) + self._rules.gather
                if now < hold_until and min(soon) <= hold_until:
                    return [], min(min(soon), hold_until)
            taken = []
            for obs, due in ready:
                del self._files[obs.path]
                taken.append(Settled(obs.path, obs.origin, obs.first_seen, due, obs.waits_for_writer))
            upcoming = soon + later
            return taken, (min(upcoming) if upcoming else None)

    def _apply_signatures(self, signatures: dict[str, Signature | None], now: float) -> None:
        for path, signature in signatures.items():
            obs = self._files.get(path)
            if obs is None:
                continue
            if signature is None:
                del self._files[path]  # gone before it settled
                continue
            if signature != obs.signature:
                # An event since the last look explains the change: the window runs from that
                # event. A change no event announced restarts the window now.
                explained = obs.signature is None or obs.last_event >= obs.checked_at
                obs.signature_since = obs.last_event if explained else now
                obs.signature = signature
            obs.checked_at = now

    def paths(self) -> list[str]:
        with self._lock:
            return list(self._files)

    def __contains__(self, path: object) -> bool:
        with self._lock:
            return path in self._files

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)

    def oldest_first_seen(self) -> float | None:
        with self._lock:
            return min((o.first_seen for o in self._files.values()), default=None)


ONCE_SETTLE_WINDOWS = 3
"""``--once`` waits at most this many windows for files that are still changing."""


def wait_until_settled(
    paths: Iterable[str],
    rules: Rules,
    limit: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    stat: Callable[[str], Signature | None] = file_signature,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[str], list[str]]:
    """The daemon's settle rule for a one-shot pass: (settled, still changing) after at most ``limit`` s.

    Each file is judged as a scan finds it: unchanged since its modification time for the window,
    so a file that settled long ago is taken at once, without any wait. A file that changes while
    it is watched starts its window again; one still changing when ``limit`` runs out is returned
    as still changing (the caller leaves it unread). A file that vanishes is in neither list.
    """
    tracker = Tracker(rules, expects_close=False, clock=clock, wall_clock=wall_clock, stat=stat)
    for path in paths:
        tracker.seed(path, "once")
    deadline = clock() + limit
    settled: list[str] = []
    while True:
        taken, next_due = tracker.take_settled()
        settled.extend(item.path for item in taken)
        now = clock()
        if not len(tracker) or next_due is None or now >= deadline:
            return settled, tracker.paths()
        sleep(max(0.01, min(next_due, deadline) - now))
