"""Readiness: when has a file settled? A fake clock and a fake stat, no disk, no sleeping."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from watcher.config import Overrides, build_settings
from watcher.intake import rules_for
from watcher.landing.readiness import (
    CONFIRM_SECONDS,
    ONCE_SETTLE_WINDOWS,
    Observation,
    Rules,
    Signature,
    State,
    Tracker,
    settle_time,
    wait_until_settled,
)

WINDOW = 1.0
STALE = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Disk:
    """File signatures by path; the wall clock sits 1.7e9 s ahead of the monotonic one."""

    def __init__(self) -> None:
        self.files: dict[str, Signature] = {}

    def __call__(self, path: str) -> Signature | None:
        return self.files.get(path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def disk() -> Disk:
    return Disk()


WALL_OFFSET = 1.7e9


def make_tracker(clock: Clock, disk: Disk, *, gather: float = 0.0, expects_close: bool = True) -> Tracker:
    return Tracker(
        Rules(window=WINDOW, stale_after=STALE, gather=gather),
        expects_close=expects_close,
        clock=clock,
        wall_clock=lambda: clock.now + WALL_OFFSET,
        stat=disk,
    )


def taken(tracker: Tracker) -> list[str]:
    return [item.path for item in tracker.take_settled()[0]]


def test_a_closed_file_settles_after_the_window_not_before(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    disk.files["a.csv"] = (100, 1)
    tracker.observe("a.csv", "created")
    tracker.observe("a.csv", "modified")
    tracker.observe("a.csv", "closed")
    clock.advance(WINDOW - 0.01)
    batch, deadline = tracker.take_settled()
    assert batch == []
    assert deadline == pytest.approx(clock.now + 0.01)
    clock.advance(0.01)
    batch, deadline = tracker.take_settled()
    assert [b.path for b in batch] == ["a.csv"]
    assert batch[0].origin == "event"
    assert batch[0].settled_at == pytest.approx(clock.now)
    assert not batch[0].forced
    assert deadline is None
    assert len(tracker) == 0


def test_a_file_still_open_for_writing_waits_for_its_close(clock: Clock, disk: Disk) -> None:
    """Pauses longer than the window do not let a half-written file in."""
    tracker = make_tracker(clock, disk)
    for size in (100, 200, 300):
        disk.files["slow.csv"] = (size, size)
        tracker.observe("slow.csv", "modified")
        clock.advance(WINDOW * 3)
        assert taken(tracker) == []
    tracker.observe("slow.csv", "closed")
    clock.advance(WINDOW / 2)
    assert taken(tracker) == []
    clock.advance(WINDOW / 2)
    assert taken(tracker) == ["slow.csv"]


def test_a_change_the_stat_sees_without_an_event_restarts_the_window(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    disk.files["a.csv"] = (100, 1)
    tracker.observe("a.csv", "closed")
    clock.advance(0.5)
    assert taken(tracker) == []  # first look: signature recorded
    disk.files["a.csv"] = (150, 2)  # grew, and no event said so
    clock.advance(0.6)
    assert taken(tracker) == []  # the stat noticed: the window starts again now
    clock.advance(WINDOW - 0.01)
    assert taken(tracker) == []
    clock.advance(0.01)
    assert taken(tracker) == ["a.csv"]


def test_a_rename_from_outside_shows_as_created_and_settles(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    disk.files["moved.csv"] = (500, 1)
    tracker.observe("moved.csv", "created")
    clock.advance(WINDOW)
    assert taken(tracker) == ["moved.csv"]


def test_a_rename_into_place_settles_after_the_window(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    disk.files["b.csv"] = (500, 1)
    tracker.observe("b.csv", "moved_in")
    clock.advance(WINDOW)
    assert taken(tracker) == ["b.csv"]


def test_a_created_empty_file_waits_for_its_writer(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    disk.files["empty.csv"] = (0, 1)
    tracker.observe("empty.csv", "created")
    clock.advance(WINDOW * 5)
    assert taken(tracker) == []
    disk.files["empty.csv"] = (80, 2)
    tracker.observe("empty.csv", "modified")
    tracker.observe("empty.csv", "closed")
    clock.advance(WINDOW)
    assert taken(tracker) == ["empty.csv"]


def test_a_file_never_seen_closed_is_taken_after_stale_after(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    disk.files["lost.csv"] = (100, 1)
    tracker.observe("lost.csv", "modified")
    clock.advance(STALE - 0.1)
    batch, deadline = tracker.take_settled()
    assert batch == [] and deadline == pytest.approx(clock.now + 0.1)
    clock.advance(0.1)
    batch, _ = tracker.take_settled()
    assert [b.path for b in batch] == ["lost.csv"] and batch[0].forced


def test_without_close_events_a_modified_file_settles_on_stability(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk, expects_close=False)
    disk.files["p.csv"] = (100, 1)
    tracker.observe("p.csv", "modified")
    clock.advance(WINDOW)
    assert taken(tracker) == ["p.csv"]


def test_switching_to_polling_releases_files_waiting_for_a_close(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    disk.files["w.csv"] = (100, 1)
    tracker.observe("w.csv", "modified")
    tracker.set_rules(Rules(window=2.0, stale_after=STALE), expects_close=False)
    clock.advance(1.5)
    assert taken(tracker) == []
    clock.advance(0.5)
    assert taken(tracker) == ["w.csv"]


def test_a_file_found_by_a_scan_that_changes_afterwards_waits_a_full_window(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    wall_now_ns = int((clock.now + WALL_OFFSET) * 1e9)
    disk.files["grows.csv"] = (100, wall_now_ns - 3_600 * 10**9)
    assert tracker.seed("grows.csv", "reconcile")
    clock.advance(0.1)
    disk.files["grows.csv"] = (200, wall_now_ns)  # a writer we get no events from
    assert taken(tracker) == []
    clock.advance(WINDOW)
    assert taken(tracker) == ["grows.csv"]


def test_a_file_found_by_a_scan_settles_by_its_modification_time(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    wall_now_ns = int((clock.now + WALL_OFFSET) * 1e9)
    disk.files["old.csv"] = (100, wall_now_ns - 3_600 * 10**9)
    disk.files["fresh.csv"] = (100, wall_now_ns - 200_000_000)  # written 0.2 s ago
    assert tracker.seed("old.csv", "startup")
    assert tracker.seed("fresh.csv", "startup")
    assert not tracker.seed("old.csv", "reconcile")  # already tracked
    assert not tracker.seed("gone.csv", "reconcile")
    batch, deadline = tracker.take_settled()
    assert [(b.path, b.origin) for b in batch] == [("old.csv", "startup")]
    assert deadline == pytest.approx(clock.now + WINDOW - 0.2)
    clock.advance(WINDOW - 0.2)
    assert taken(tracker) == ["fresh.csv"]


def test_settled_files_wait_briefly_for_others_about_to_settle(clock: Clock, disk: Disk) -> None:
    """One batch for a burst: bounded by ``gather``."""
    tracker = make_tracker(clock, disk, gather=0.5)
    disk.files["1.csv"] = (10, 1)
    disk.files["2.csv"] = (10, 1)
    tracker.observe("1.csv", "closed")
    clock.advance(0.3)
    tracker.observe("2.csv", "closed")
    clock.advance(WINDOW - 0.3)
    batch, deadline = tracker.take_settled()
    assert batch == [] and deadline == pytest.approx(clock.now + 0.3)
    clock.advance(0.3)
    assert sorted(taken(tracker)) == ["1.csv", "2.csv"]


def test_gathering_never_holds_a_settled_file_longer_than_gather(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk, gather=0.5)
    disk.files["1.csv"] = (10, 1)
    disk.files["2.csv"] = (10, 1)
    disk.files["slow.csv"] = (10, 1)
    tracker.observe("1.csv", "closed")
    tracker.observe("slow.csv", "modified")  # a slow writer is not waited for
    clock.advance(0.9)
    tracker.observe("2.csv", "closed")  # settles 0.9 s after 1.csv: beyond the gather time
    clock.advance(0.1)
    assert taken(tracker) == ["1.csv"]


def test_deleted_or_vanished_files_are_dropped(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    disk.files["a.csv"] = (10, 1)
    tracker.observe("a.csv", "closed")
    tracker.observe("b.csv", "closed")  # never on disk
    tracker.forget("a.csv")
    clock.advance(WINDOW)
    assert taken(tracker) == []
    assert len(tracker) == 0


def test_restore_puts_a_batch_back_and_newer_observations_win(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    disk.files["a.csv"] = (10, 1)
    disk.files["b.csv"] = (10, 1)
    tracker.observe("a.csv", "closed")
    tracker.observe("b.csv", "closed")
    clock.advance(WINDOW)
    batch, _ = tracker.take_settled()
    assert len(batch) == 2
    tracker.observe("b.csv", "modified")  # written again meanwhile
    tracker.restore(batch)
    assert taken(tracker) == ["a.csv"]  # at once: it had settled already
    assert "b.csv" in tracker


def test_oldest_first_seen(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    assert tracker.oldest_first_seen() is None
    tracker.observe("a.csv", "created")
    first = clock.now
    clock.advance(5)
    tracker.observe("b.csv", "created")
    tracker.observe("a.csv", "modified")
    assert tracker.oldest_first_seen() == first


def test_settle_time_is_a_pure_function_of_the_observation() -> None:
    rules = Rules(window=1.0, stale_after=30.0)
    closed = Observation("a", "event", State.CLOSED, 0.0, 10.0, (5, 1), 12.0)
    assert settle_time(closed, rules) == 13.0
    writing = Observation("a", "event", State.WRITING, 0.0, 10.0, (5, 1), 9.0)
    assert settle_time(writing, rules) == 40.0
    empty = Observation("a", "event", State.CREATED, 0.0, 10.0, (0, 1), 9.0)
    assert settle_time(empty, rules) == 40.0
    confirming = Rules(window=1.0, stale_after=30.0, confirm=0.25)
    assert settle_time(closed, confirming) == 12.25
    reopened = Observation("a", "event", State.CLOSED, 0.0, 10.0, (5, 1), 12.0, reopened=True)
    assert settle_time(reopened, confirming) == 13.0


def test_observations_from_another_thread_are_safe(clock: Clock, disk: Disk) -> None:
    tracker = make_tracker(clock, disk)
    paths = [f"f{i}.csv" for i in range(2000)]
    for path in paths:
        disk.files[path] = (1, 1)

    def observe() -> None:
        for path in paths:
            tracker.observe(path, "created")
            tracker.observe(path, "closed")

    thread = threading.Thread(target=observe)
    thread.start()
    seen: list[str] = []
    while thread.is_alive():
        clock.advance(WINDOW)
        seen += taken(tracker)
    thread.join()
    clock.advance(WINDOW)
    seen += taken(tracker)
    assert sorted(set(seen)) == sorted(paths)


# -- the settle rule of a one-shot pass (``watch --once``) ----------------------------------------


def settle_once(clock: Clock, disk: Disk, paths: list[str], writer: dict[str, int] | None = None) -> Any:
    """``wait_until_settled`` with the fake clock; each sleep lets ``writer``'s files grow."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        for path, growth in (writer or {}).items():
            size, _ = disk.files[path]
            disk.files[path] = (size + growth, int((clock.now + WALL_OFFSET) * 1e9))

    settled, changing = wait_until_settled(
        paths,
        Rules(window=WINDOW, stale_after=WINDOW),
        ONCE_SETTLE_WINDOWS * WINDOW,
        clock=clock,
        wall_clock=lambda: clock.now + WALL_OFFSET,
        stat=disk,
        sleep=sleep,
    )
    return settled, changing, sleeps


def test_once_takes_files_that_settled_long_ago_without_waiting(clock: Clock, disk: Disk) -> None:
    disk.files["old.csv"] = (100, int((clock.now + WALL_OFFSET - 60) * 1e9))
    settled, changing, sleeps = settle_once(clock, disk, ["old.csv"])
    assert (settled, changing, sleeps) == (["old.csv"], [], [])


def test_once_leaves_a_file_still_being_written_pending(clock: Clock, disk: Disk) -> None:
    now_ns = int((clock.now + WALL_OFFSET) * 1e9)
    disk.files["growing.csv"] = (100, now_ns)
    disk.files["old.csv"] = (100, now_ns - 60 * 10**9)
    settled, changing, sleeps = settle_once(clock, disk, ["growing.csv", "old.csv"], {"growing.csv": 10})
    assert settled == ["old.csv"] and changing == ["growing.csv"]
    assert sum(sleeps) <= ONCE_SETTLE_WINDOWS * WINDOW + 0.01, "the wait is bounded"


def test_once_takes_a_file_whose_writer_finishes_within_the_wait(clock: Clock, disk: Disk) -> None:
    disk.files["recent.csv"] = (100, int((clock.now + WALL_OFFSET - 0.4) * 1e9))
    settled, changing, sleeps = settle_once(clock, disk, ["recent.csv"])
    assert (settled, changing) == (["recent.csv"], [])
    assert sleeps and sum(sleeps) == pytest.approx(0.6, abs=0.02), "waited out the rest of the window"


# -- settling by evidence: a close after writing, or a rename into the tree ------------------------

REOPEN_GAP = 0.3
"""A writer that closes, waits this long, reopens and appends (the case the confirmation covers)."""


def evidence_tracker(clock: Clock, disk: Disk) -> Tracker:
    """The daemon's rules on a backend that reports closes (inotify), with the default window."""
    return Tracker(
        Rules(window=WINDOW, stale_after=STALE, confirm=CONFIRM_SECONDS),
        clock=clock,
        wall_clock=lambda: clock.now + WALL_OFFSET,
        stat=disk,
    )


def test_a_close_after_writing_settles_after_the_short_confirmation(clock: Clock, disk: Disk) -> None:
    tracker = evidence_tracker(clock, disk)
    disk.files["a.csv"] = (100, 1)
    tracker.observe("a.csv", "created")
    tracker.observe("a.csv", "modified")
    tracker.observe("a.csv", "closed")
    clock.advance(CONFIRM_SECONDS - 0.01)
    batch, deadline = tracker.take_settled()
    assert batch == [] and deadline == pytest.approx(clock.now + 0.01)
    clock.advance(0.01)
    batch, _ = tracker.take_settled()
    assert [b.path for b in batch] == ["a.csv"]
    assert batch[0].settled_at == pytest.approx(clock.now)
    assert CONFIRM_SECONDS < WINDOW


def test_a_rename_into_the_tree_settles_after_the_short_confirmation(clock: Clock, disk: Disk) -> None:
    tracker = evidence_tracker(clock, disk)
    disk.files["b.csv"] = (500, 1)
    tracker.observe("b.csv", "moved_in")
    clock.advance(CONFIRM_SECONDS)
    assert taken(tracker) == ["b.csv"]


def test_a_change_during_the_confirmation_restarts_it(clock: Clock, disk: Disk) -> None:
    """Size or mtime changed and no event said so: confirmed only after a whole window of calm."""
    tracker = evidence_tracker(clock, disk)
    disk.files["a.csv"] = (100, 1)
    tracker.observe("a.csv", "closed")
    clock.advance(0.01)
    assert taken(tracker) == []  # first look: signature recorded
    clock.advance(CONFIRM_SECONDS / 2)
    disk.files["a.csv"] = (100, 2)  # touched
    assert taken(tracker) == []
    clock.advance(CONFIRM_SECONDS - 0.01)
    assert taken(tracker) == []
    clock.advance(0.01)
    assert taken(tracker) == ["a.csv"]


def test_files_seen_without_evidence_keep_the_full_window(clock: Clock, disk: Disk) -> None:
    """A rename from outside (only a creation), a scan's find, a change without close events."""
    tracker = evidence_tracker(clock, disk)
    wall_now_ns = int((clock.now + WALL_OFFSET) * 1e9)
    disk.files["created.csv"] = (500, 1)
    disk.files["scanned.csv"] = (500, wall_now_ns)
    tracker.observe("created.csv", "created")
    assert tracker.seed("scanned.csv", "reconcile")
    clock.advance(CONFIRM_SECONDS + 0.01)
    assert taken(tracker) == []
    clock.advance(WINDOW - CONFIRM_SECONDS - 0.01)
    assert sorted(taken(tracker)) == ["created.csv", "scanned.csv"]


def test_without_close_events_a_rename_keeps_the_full_window(clock: Clock, disk: Disk) -> None:
    """Polling reports renames too, but no close: the daemon's polling rules have no confirmation."""
    settings = build_settings(Overrides(debounce_seconds=WINDOW), env={})
    polling = rules_for(settings, polling=True)
    assert polling.confirm_window == polling.window
    assert rules_for(settings, polling=False).confirm_window == CONFIRM_SECONDS
    tracker = evidence_tracker(clock, disk)
    tracker.set_rules(polling, expects_close=False)
    disk.files["p.csv"] = (500, 1)
    tracker.observe("p.csv", "moved_in")
    clock.advance(polling.window - 0.01)
    assert taken(tracker) == []
    clock.advance(0.01)
    assert taken(tracker) == ["p.csv"]


def test_the_confirmation_is_never_longer_than_the_window() -> None:
    rules = Rules(window=0.3, stale_after=STALE, confirm=CONFIRM_SECONDS)
    assert rules.confirm_window == 0.3
    assert Rules(window=2.0, stale_after=STALE).confirm_window == 2.0


def test_a_writer_that_closes_and_reopens_at_once_waits_for_its_last_close(clock: Clock, disk: Disk) -> None:
    """Closed, reopened 300 ms later to append: not taken between, and once reopened, its next
    close no longer counts as proof: it needs the full window."""
    tracker = evidence_tracker(clock, disk)
    disk.files["r.csv"] = (100, 1)
    tracker.observe("r.csv", "created")
    tracker.observe("r.csv", "modified")
    tracker.observe("r.csv", "closed")
    assert taken(tracker) == []
    clock.advance(REOPEN_GAP)
    assert taken(tracker) == []  # still within the confirmation
    disk.files["r.csv"] = (200, 2)
    tracker.observe("r.csv", "modified")  # reopened and appending: a writer again
    clock.advance(WINDOW * 5)
    assert taken(tracker) == []  # open for writing: waits for a close
    tracker.observe("r.csv", "closed")
    clock.advance(CONFIRM_SECONDS)
    assert taken(tracker) == []
    clock.advance(WINDOW - CONFIRM_SECONDS)
    assert taken(tracker) == ["r.csv"]
