"""The daemon's intake: which files of the landing zone wait for the next batch.

On a folder, the observer (file events, else polling) records changes into the ``Tracker``, where
files settle; a scan every ``reconcile_seconds`` is the backstop for lost events and checks that
events arrive at all. On a bucket, a listing every poll interval and a full one every reconcile
interval stand in for both, and an object waits as it is (complete once visible). What a scan
finds that is never read (links, folders named .csv, names no route takes) waits as it is too.

Threads: everything here runs on the main thread (scans ask the manifest), except
``request_rescan`` (watchdog's thread) and what the observer records into the tracker. The HTTP
threads read the counts, the watcher and the problems.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import structlog

from watcher.config import Settings
from watcher.database_steps import DatabaseUnavailable
from watcher.errortext import first_line
from watcher.ingest import is_unrouted
from watcher.landing import open_zone
from watcher.landing.observer import (
    EVENT_GRACE_SECONDS,
    Announcements,
    EventCheck,
    Watcher,
    folder_identity,
    start_polling,
    start_watcher,
)
from watcher.landing.readiness import CONFIRM_SECONDS, Rules, Settled, Tracker
from watcher.landing.zone import Candidate, ChangeSource, LandingZone
from watcher.pipeline import Pipeline
from watcher.waker import Waker

log = structlog.get_logger(__name__)

STALE_AFTER_MIN_SECONDS = 30.0


def rules_for(settings: Settings, *, polling: bool) -> Rules:
    """Polling sees a change up to one interval late: the window grows by that interval. Polling
    reports no close either, so nothing there settles by the short confirmation."""
    window = settings.debounce_seconds + (settings.polling_interval_seconds if polling else 0.0)
    return Rules(
        window=window,
        stale_after=max(STALE_AFTER_MIN_SECONDS, 10 * window),
        gather=settings.debounce_seconds,
        confirm=None if polling else CONFIRM_SECONDS,
    )


def relative_to_zone(settings: Settings, path: str) -> str:
    """A path as the landing zone names it (the path itself when it lies outside)."""
    try:
        return Path(path).relative_to(settings.data_dir).as_posix()
    except ValueError:
        return path


class Intake:
    """The files waiting for the next batch, and what finds them: the observer or the listing,
    and the scans."""

    def __init__(
        self, settings: Settings, pipeline: Pipeline, waker: Waker, *, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self.clock = clock
        self.waker = waker
        self.tracker = Tracker(rules_for(settings, polling=False), clock=clock, wake=waker.wake)
        self.zone = open_zone(settings)
        self.poller = _poller_for(self.zone)
        """What notices a bucket's changes (its listing); None for a folder (file events, else
        polling, and settling)."""
        self.next_poll = 0.0
        self.listing_problem: str | None = None
        """Why the bucket could not be listed, until a listing succeeds (for /readyz)."""
        self.immediate: list[tuple[Candidate, str]] = []
        """Entries a scan found that are not read (links, folders named .csv, names no route
        takes): recorded as they are, without settling."""
        self.watcher: Watcher | None = None
        self.announcements = Announcements()
        """Paths file events named since the last scan: the scan checks that events arrive."""
        self.event_check = EventCheck(EVENT_GRACE_SECONDS)
        self.zone_missing = False
        self.next_reconcile = math.inf
        self.rescan_requested = False
        self.events_lost = False
        self.scan_origin = "startup"
        """Until a scan of the landing zone succeeds, what it finds is the backlog."""

    # -- watching -----------------------------------------------------------------------------------

    def start_watching(self, *, polling_because: str | None = None) -> None:
        """Start the observer (again: after the landing zone was replaced, or to poll)."""
        if self.poller is not None:
            self.metrics.set_backend("listing")
            log.info(
                "watcher_started",
                backend="listing",
                reason=f"a bucket: new keys looked for every {self.settings.polling_interval_seconds:g} s,"
                f" a full listing every {self.settings.reconcile_seconds:g} s",
            )
            return
        if polling_because is not None:
            self.watcher = start_polling(
                self.settings.data_dir,
                self.tracker,
                self.settings.polling_interval_seconds,
                polling_because,
                self.announcements,
            )
        else:
            self.watcher = start_watcher(
                self.settings.data_dir,
                self.tracker,
                force_polling=self.settings.force_polling,
                polling_interval=self.settings.polling_interval_seconds,
                announcements=self.announcements,
            )
        self.announcements.take()  # the watch is in place: changes from now on are announced
        self.event_check.restart(time.time())
        polling = self.watcher.polling
        self.tracker.set_rules(rules_for(self.settings, polling=polling), expects_close=not polling)
        self.metrics.set_backend(self.watcher.backend)
        event = (
            "watcher_fell_back_to_polling"
            if polling and not self.settings.force_polling
            else "watcher_started"
        )
        getattr(log, "warning" if event != "watcher_started" else "info")(
            event, backend=self.watcher.backend, reason=self.watcher.reason
        )

    def stop_watching(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def request_rescan(self) -> None:
        """Called from watchdog's thread when the kernel dropped events."""
        self.events_lost = True
        self.rescan_requested = True
        self.waker.wake()

    def check_landing_zone(self) -> None:
        """A landing zone replaced under its name (``mv lake lake.old; mkdir lake``) is watched anew.

        One ``stat`` per turn of the loop: the watch follows the old folder, whose events no
        longer name files of the landing zone, so only its identity tells.
        """
        if self.watcher is None:
            return
        identity = folder_identity(self.settings.data_dir)
        if identity == self.watcher.identity and (identity is None or self.watcher.alive()):
            return
        if identity is None:
            if not self.zone_missing:
                self.zone_missing = True
                log.warning("landing_zone_missing", step="watch", data_dir=str(self.settings.data_dir))
            return
        self.zone_missing = False
        # Deleted and made again, a new folder may get the old inode number back; the watch of
        # the deleted one then ended (inotify's IN_DELETE_SELF stops watchdog's emitter).
        log.warning(
            "landing_zone_replaced",
            step="watch",
            data_dir=str(self.settings.data_dir),
            detail="the folder was replaced or recreated; watching the new one and scanning it",
        )
        self.watcher.stop()
        self.start_watching()
        self.rescan_requested = True

    # -- the next batch -----------------------------------------------------------------------------

    def take_immediate(self) -> list[tuple[Candidate, str]]:
        """The entries that wait as they are, for the batch about to run."""
        extra, self.immediate = self.immediate, []
        return extra

    def give_back(self, batch: list[Settled], extra: list[tuple[Candidate, str]]) -> None:
        """A batch that could not run waits again."""
        self.tracker.restore(batch)
        self.immediate.extend(extra)

    # -- scans --------------------------------------------------------------------------------------

    def reconcile_due(self, now: float) -> bool:
        return self.rescan_requested or now >= self.next_reconcile

    def poll_due(self, now: float) -> bool:
        return self.poller is not None and now >= self.next_poll

    def _schedule_reconcile(self) -> None:
        interval = self.settings.reconcile_seconds
        self.next_reconcile = self.clock() + interval if interval > 0 else math.inf

    def reconcile(self) -> None:
        """The backlog at start, then the backstop scan for events that were lost."""
        self._schedule_reconcile()
        self.rescan_requested = False
        origin = self.scan_origin
        announced = self.announcements.take()
        taken_at = time.time()
        events_lost, self.events_lost = self.events_lost, False
        try:
            found, changed = self._seed_from_scan(origin)
        except (DatabaseUnavailable, psycopg.Error, OSError) as exc:
            if isinstance(exc, OSError):
                self.listing_problem = first_line(exc)
            log.warning("scan_failed", step=origin, error=first_line(exc))
            self.next_reconcile = min(self.next_reconcile, self.clock() + 5.0)
            self.event_check.restart(taken_at)
            return
        self.scan_origin = "reconcile"
        if events_lost:
            self.event_check.restart(taken_at)  # an overflow is a burst, not a broken backend
        else:
            self._check_events(changed, announced, taken_at)
        if origin == "startup":
            log.info("backlog_found", step="startup", files=found)
        elif found:
            log.info("reconcile_found_files", step="reconcile", files=found)

    def _seed_from_scan(self, origin: str) -> tuple[int, list[tuple[str, float]]]:
        """Scan the landing zone; put what the manifest does not know into the tracker.

        Returns how many entries were new, and the files among them with the time of their last
        change (``st_ctime``), for the event check.
        """
        if self.poller is not None:
            return self._take_from_bucket(origin, full=True), []
        waiting = self.pipeline.pending(self.zone.scan())
        known = {candidate.relative for candidate, _ in self.immediate}
        found = 0
        changed: list[tuple[str, float]] = []
        for candidate in waiting:
            if candidate.problem is not None or is_unrouted(candidate):
                # Nothing of it is read (a problem, or a name no route takes): no need to settle.
                if candidate.relative not in known:
                    self.immediate.append((candidate, origin))
                    found += 1
            elif self.tracker.seed(str(candidate.path), origin):
                found += 1
                with contextlib.suppress(OSError):
                    changed.append((str(candidate.path), os.stat(candidate.path).st_ctime))
        return found, changed

    def poll_bucket(self) -> None:
        """Between two full listings: the keys after the last one seen, one request when none."""
        try:
            found = self._take_from_bucket("event", full=False)
        except (DatabaseUnavailable, psycopg.Error, OSError) as exc:
            if isinstance(exc, OSError):
                self.listing_problem = first_line(exc)
            log.warning("poll_failed", step="poll", error=first_line(exc))
            return
        if found:
            log.info("poll_found_objects", step="poll", files=found)

    def _take_from_bucket(self, origin: str, *, full: bool) -> int:
        """List the bucket; what the manifest does not know in the version listed joins the next
        batch as it is (an object is complete once visible). What it knows is remembered: at the
        next listing it costs no database query."""
        assert self.poller is not None
        self.next_poll = self.clock() + self.settings.polling_interval_seconds
        listed = self.poller.poll(full=full)
        self.listing_problem = None
        if not listed:
            return 0
        try:
            entries = self.pipeline.manifest_snapshot()
            waiting = self.pipeline.pending(listed, entries)
        except BaseException:
            self.poller.retract()  # not queued: the next poll lists them again
            raise
        keys = {c.relative for c in waiting}
        self.poller.remember(
            c
            for c in listed
            if c.relative not in keys
            and (entry := entries.get(c.relative)) is not None
            and entry.status != "failed"  # a failed object is looked at again after its back-off
        )
        queued = {candidate.relative for candidate, _ in self.immediate}
        new = [c for c in waiting if c.relative not in queued]
        self.immediate.extend((c, origin) for c in new)
        return len(new)

    def _check_events(self, changed: list[tuple[str, float]], announced: set[str], now: float) -> None:
        """Files the scan found that no event announced: file events do not arrive, poll instead."""
        missing = self.event_check.judge(changed, announced, now)
        if not missing or self.watcher is None or self.watcher.polling:
            return
        shown = ", ".join(relative_to_zone(self.settings, path) for path in missing[:3])
        reason = (
            f"the backstop scan found {len(missing)} file(s) that no file event announced ({shown}):"
            f" {self.watcher.backend} events do not arrive from this folder"
        )
        self.watcher.stop()
        self.start_watching(polling_because=reason)


def _poller_for(zone: LandingZone) -> ChangeSource | None:
    if zone.settles:
        return None
    from watcher.landing.bucket import BucketPoller, BucketZone

    assert isinstance(zone, BucketZone)
    return BucketPoller(zone)
