"""The daemon: the event loop around the pipeline, signals, the backlog at start.

Threads: watchdog's observer thread only records observations into the ``Tracker``; the HTTP
endpoint answers in its own threads; everything else (loading, dbt, the database) runs on the
main thread, one batch at a time, with ONE ``Pipeline`` (and its warm dbt project) for the life
of the process. Builds therefore never overlap: files that settle during a build wait for the
next batch, and one follow-up build covers them all.

The loop: wake on an observation, a signal or a deadline; take every file that settled as one
batch; ``pipeline.run_pass`` it; repeat. Every ``reconcile_seconds`` a scan of the landing zone is
a backstop for lost events. Idle, the loop sleeps in ``epoll`` for seconds at a time.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import psycopg
import structlog

from watcher.config import Settings
from watcher.database_steps import DatabaseUnavailable
from watcher.http_endpoint import HttpEndpoint
from watcher.ingest import is_unrouted
from watcher.inventory import log_inventory
from watcher.landing import open_zone
from watcher.landing.observer import (
    EVENT_GRACE_SECONDS,
    Announcements,
    EventCheck,
    Watcher,
    folder_identity,
    listen_for_overflow,
    start_polling,
    start_watcher,
    stop_listening,
)
from watcher.landing.readiness import CONFIRM_SECONDS, DropTimes, Rules, Settled, Tracker
from watcher.landing.scanner import inspect_entry
from watcher.landing.zone import Candidate, ChangeSource, LandingZone
from watcher.metrics import Metrics
from watcher.pass_result import EXIT_OK, EXIT_USAGE
from watcher.pipeline import Pipeline

log = structlog.get_logger(__name__)

IDLE_TICK_SECONDS = 5.0
"""Longest sleep of the loop: the heartbeat /healthz looks at."""
MIN_CHECK_INTERVAL_SECONDS = 0.05
"""A burst of events is looked at 20 times a second at most, not once per event."""
HEARTBEAT_LIMIT_SECONDS = 60.0
DATABASE_CHECK_SECONDS = 15.0
MAX_BACKOFF_SECONDS = 60.0
STALE_AFTER_MIN_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 3
STOP_GRACE_SECONDS = 5.0
"""After a stop request, the pass in flight may end by itself this long (a warm dbt build takes
1-3 s); then its statements are cancelled, so the process exits within 10 s even when a
statement waits for a lock."""
CANCEL_INTERVAL_SECONDS = 0.5


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


def run_daemon(settings: Settings, url: str) -> int:
    """Watch the landing zone until SIGTERM or SIGINT; 0 after a clean stop."""
    from watcher.commands import make_pipeline

    pipeline = make_pipeline(settings, url, Metrics())
    try:
        return Daemon(settings, pipeline).run()
    finally:
        pipeline.close()


class Waker:
    """A self-pipe: the observer thread and signals wake the loop out of its wait.

    Never closed: a signal (``set_wakeup_fd``) or a thread may write to it until the process ends,
    and a closed descriptor's number could by then belong to another file.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._read, selectors.EVENT_READ)
        self._flagged = False

    @property
    def write_fd(self) -> int:
        return self._write

    def wake(self) -> None:
        if self._flagged:
            return
        self._flagged = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def wait(self, timeout: float) -> None:
        self._selector.select(max(0.0, timeout))
        self._flagged = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass


class Daemon:
    def __init__(
        self, settings: Settings, pipeline: Pipeline, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        pipeline.should_stop = self._should_stop  # also cuts database retries short on a stop
        self.metrics = pipeline.metrics
        self.clock = clock
        self.waker = Waker()
        self.tracker = Tracker(rules_for(settings, polling=False), clock=clock, wake=self.waker.wake)
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
        self.stop_signal: int | None = None
        self.started = False
        self.warm = threading.Event()
        self.announced = False
        self.stop_requested = False
        self.stop_event = threading.Event()
        """Set by the signal handler: wakes the thread that cancels what the pass waits for."""
        self.loop_done = threading.Event()
        self.problem: str | None = None
        """Why the last batch could not run (a database error), until a batch runs (for /readyz)."""
        self.signals = 0
        self.heartbeat = clock()
        self.pass_started: float | None = None
        self.in_flight: tuple[int, float] | None = None
        self.retry_at = 0.0
        self.backoff = 0.0
        self.next_reconcile = math.inf
        self.rescan_requested = False
        self.events_lost = False
        self.scan_origin = "startup"
        """Until a scan of the landing zone succeeds, what it finds is the backlog."""
        self.next_database_check = 0.0

    # -- lifecycle ----------------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        try:
            endpoint = self._start_endpoint()
        except OSError as exc:
            hint = (
                "another process (a second daemon?) listens there: give this one another address"
                " with --metrics-addr HOST:PORT (or WEARABLE_METRICS_ADDR), or turn it off with"
                " --metrics-addr off"
            )
            log.error("metrics_endpoint_failed", address=_address(self.settings), error=str(exc), hint=hint)
            print(
                f"wearable-pipeline: cannot listen on {_address(self.settings)} ({exc.strerror or exc}): {hint}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        overflow = listen_for_overflow(self._request_rescan)
        threading.Thread(target=self._cancel_on_stop, name="stop-canceller", daemon=True).start()
        try:
            log.info(
                "daemon_starting",
                data_dir=self.settings.landing,
                debounce_s=self.settings.debounce_seconds,
                reconcile_s=self.settings.reconcile_seconds,
                database=self.settings.redacted_database(),
            )
            log_inventory(self.zone, self.pipeline.db.url)
            self._start_watching()
            self._start_backlog()
            while not self.stop_requested:
                self._step()
            log.info(
                "shutdown_requested",
                step="daemon",
                signal=signal.Signals(self.stop_signal).name if self.stop_signal else None,
                in_flight=self.in_flight is not None,
            )
        finally:
            self.loop_done.set()
            stop_listening(overflow)
            if self.watcher is not None:
                self.watcher.stop()
            if endpoint is not None:
                endpoint.stop()
            # The waker's pipe stays open: a late signal or thread may still write to it.
        log.info("daemon_stopped", step="daemon", status="success")
        return EXIT_OK

    def _install_signals(self) -> None:
        # SIGHUP (the terminal went away, or a deliberate hang-up) stops cleanly, as SIGTERM does.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        signal.set_wakeup_fd(self.waker.write_fd, warn_on_full_buffer=False)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only flags here: logging from a signal handler can re-enter a stream mid-write.
        self.signals += 1
        if self.signals > 1:
            with contextlib.suppress(OSError):
                os.write(2, b'{"event": "shutdown_forced", "level": "warning"}\n')
            os._exit(128 + signum)
        self.stop_requested = True
        self.stop_signal = signum
        self.stop_event.set()  # no I/O here: the canceller thread does it

    def _should_stop(self) -> bool:
        return self.stop_requested

    def _cancel_on_stop(self) -> None:
        """After a stop request and its grace period, cancel the statements the pass still waits
        for (a lock wait, a long dbt node), again every half second until the loop is done.

        A thread of its own: a signal handler must not do I/O, and the main thread is the one
        blocked in the statement.
        """
        self.stop_event.wait()
        if self.loop_done.wait(STOP_GRACE_SECONDS):
            return
        told = False
        while not self.loop_done.is_set():
            asked = self.pipeline.cancel_statements()
            if asked and not told:
                told = True
                log.warning(
                    "statements_cancelled", step="daemon", statements=asked, grace_s=STOP_GRACE_SECONDS
                )
            self.loop_done.wait(CANCEL_INTERVAL_SECONDS)

    def _start_endpoint(self) -> HttpEndpoint | None:
        if self.settings.metrics_addr is None:
            return None
        host, port = self.settings.metrics_addr
        endpoint = HttpEndpoint(host, port, liveness=self.liveness, readiness=self.readiness)
        endpoint.start()
        self.metrics.files_pending.set_function(self._pending_count)
        self.metrics.oldest_pending_age.set_function(self._oldest_pending_age)
        log.info("metrics_endpoint_started", address=f"{host}:{endpoint.port}")
        return endpoint

    def _start_watching(self, *, polling_because: str | None = None) -> None:
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

    def _start_backlog(self) -> None:
        """Files present but not in the manifest: one ``startup`` batch, while dbt warms up.

        The parse (seconds) runs in a thread: a stop request is not held up by it, and the
        backlog loads meanwhile (its build waits for the parse).
        """
        threading.Thread(target=self._warm_up, name="dbt-warm-up", daemon=True).start()
        self._reconcile()
        if not self.stop_requested:
            self._step(startup=True)
        if not self.stop_requested:
            self._catch_up()
        self.started = True

    def _catch_up(self) -> None:
        """Build what an earlier process loaded but never built (it was killed in between)."""
        try:
            self.pipeline.catch_up()
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("catch_up_build_skipped", step="startup", error=str(exc).splitlines()[0])

    def _warm_up(self) -> None:
        try:
            self.pipeline.warm_up()
            # The parsed dbt project and the modules loaded so far live as long as the process:
            # keep them out of the collector's full passes, which otherwise cost 0.15-0.3 s in
            # every few dbt builds, on the drop-to-ready path. (Should dbt ever parse again, after
            # a build that could not run, this first project stays in memory: once, bounded.)
            gc.collect()
            gc.freeze()
        finally:
            self.warm.set()
            self.waker.wake()

    # -- the loop -----------------------------------------------------------------------------------

    def _step(self, *, startup: bool = False) -> None:
        now = self.clock()
        self.heartbeat = now
        if not startup:
            self._check_landing_zone()
        if not self.announced and self.started and self.warm.is_set():
            self.announced = True
            log.info("daemon_ready", step="startup", backend=self.watcher.backend if self.watcher else None)
        if not startup and (self.rescan_requested or now >= self.next_reconcile):
            self._reconcile()
            self._retry_build()
        elif not startup and self.poller is not None and now >= self.next_poll:
            self._poll_bucket()
        if now >= self.retry_at:
            batch, deadline = self.tracker.take_settled()
            if batch or self.immediate:
                self._run_batch(batch)
                return
        else:
            deadline = self.retry_at
        if startup:
            return
        self._check_database(now)
        self._sleep(now, deadline)

    def _sleep(self, now: float, deadline: float | None) -> None:
        until = min(
            deadline if deadline is not None else math.inf, self.next_reconcile, now + IDLE_TICK_SECONDS
        )
        if self.poller is not None:
            until = min(until, max(self.next_poll, now))
        if self.retry_at > now:
            until = min(max(until, self.retry_at), now + IDLE_TICK_SECONDS)
        self.waker.wait(until - now)
        # A burst wakes the loop on almost every event: look at most every few tens of ms.
        if len(self.tracker) and not self.stop_requested:
            spare = MIN_CHECK_INTERVAL_SECONDS - (self.clock() - now)
            if spare > 0:
                time.sleep(spare)

    def _run_batch(self, batch: list[Settled]) -> None:
        extra, self.immediate = self.immediate, []
        candidates = [inspect_entry(self.settings.data_dir, Path(item.path)) for item in batch]
        candidates += [candidate for candidate, _ in extra]
        try:
            waiting = self.pipeline.pending(candidates)
        except (DatabaseUnavailable, psycopg.Error) as exc:
            self._defer(batch, extra, str(exc))
            return
        if not waiting:
            self.problem = None  # the batch could run: there was nothing left to do
        if not waiting or self.stop_requested:
            return  # what is not loaded stays in the landing zone for the next start
        origins = {item.origin for item in batch} | {origin for _, origin in extra}
        trigger = "startup" if "startup" in origins else "event" if "event" in origins else "reconcile"
        drop_times = self._drop_times(batch) | _object_drop_times(extra)
        for item in batch:
            if item.forced:
                log.warning("file_settled_without_close", path=_relative(self.settings, item.path))
        oldest = min((item.first_seen for item in batch), default=self.clock())
        self.in_flight = (len(waiting), oldest)
        self.pass_started = self.clock()
        try:
            result = self.pipeline.run_pass(
                waiting, trigger, drop_times=drop_times, should_stop=self._should_stop
            )
        finally:
            self.in_flight = None
            self.pass_started = None
        if result.infrastructure_error:
            self._defer(batch, extra, result.infrastructure_error)
        else:
            self.backoff = 0.0
            self.problem = None

    def _retry_build(self) -> None:
        """A build that failed on a transient fault is tried again at each backstop tick, so the
        models converge without a new file."""
        if not self.pipeline.build_retry_wanted or self.stop_requested:
            return
        self.pass_started = self.clock()
        try:
            self.pipeline.retry_build()
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("build_retry_deferred", step="reconcile", error=str(exc).splitlines()[0])
        finally:
            self.pass_started = None

    def _drop_times(self, batch: list[Settled]) -> dict[str, DropTimes]:
        """When each file was first seen and when it settled, on the wall clock (drop-to-ready)."""
        offset = time.time() - self.clock()
        return {
            _relative(self.settings, item.path): DropTimes(item.first_seen + offset, item.settled_at + offset)
            for item in batch
        }

    def _defer(self, batch: list[Settled], extra: list[tuple[Candidate, str]], error: str) -> None:
        """The database is away: keep the files pending and try again later, backing off."""
        self.tracker.restore(batch)
        self.immediate.extend(extra)
        self.backoff = min(MAX_BACKOFF_SECONDS, max(1.0, self.backoff * 2))
        self.retry_at = self.clock() + self.backoff
        self.problem = error.splitlines()[0] if error else "a database error"
        if not self.pipeline.lock_problem:  # a lock wait is no outage
            self.metrics.database_up.set(0)
        log.warning(
            "batch_deferred",
            step="daemon",
            files=len(batch) + len(extra),
            retry_in_s=self.backoff,
            error=error.splitlines()[0] if error else None,
        )

    # -- scans --------------------------------------------------------------------------------------

    def _schedule_reconcile(self) -> None:
        interval = self.settings.reconcile_seconds
        self.next_reconcile = self.clock() + interval if interval > 0 else math.inf

    def _request_rescan(self) -> None:
        """Called from watchdog's thread when the kernel dropped events."""
        self.events_lost = True
        self.rescan_requested = True
        self.waker.wake()

    def _check_landing_zone(self) -> None:
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
        self._start_watching()
        self.rescan_requested = True

    def _reconcile(self) -> None:
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
                self.listing_problem = str(exc).splitlines()[0]
            log.warning("scan_failed", step=origin, error=str(exc).splitlines()[0])
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

    def _poll_bucket(self) -> None:
        """Between two full listings: the keys after the last one seen, one request when none."""
        try:
            found = self._take_from_bucket("event", full=False)
        except (DatabaseUnavailable, psycopg.Error, OSError) as exc:
            if isinstance(exc, OSError):
                self.listing_problem = str(exc).splitlines()[0]
            log.warning("poll_failed", step="poll", error=str(exc).splitlines()[0])
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
        shown = ", ".join(_relative(self.settings, path) for path in missing[:3])
        reason = (
            f"the backstop scan found {len(missing)} file(s) that no file event announced ({shown}):"
            f" {self.watcher.backend} events do not arrive from this folder"
        )
        self.watcher.stop()
        self._start_watching(polling_because=reason)

    # -- health -------------------------------------------------------------------------------------

    def _check_database(self, now: float) -> None:
        if now < self.next_database_check:
            return
        self.next_database_check = now + DATABASE_CHECK_SECONDS
        self.metrics.database_up.set(1 if self._database_answers() else 0)

    def _database_answers(self) -> bool:
        return self.pipeline.db.ping(CONNECT_TIMEOUT_SECONDS)

    def liveness(self) -> tuple[bool, str]:
        """The process, its observer threads and its loop are alive (called by /healthz)."""
        if self.poller is not None:
            if not self.started:
                return True, "starting"
            if self.clock() - self.heartbeat > HEARTBEAT_LIMIT_SECONDS and self.pass_started is None:
                return False, "the main loop has not ticked for a minute"
            return True, "ok (listing)"
        if self.watcher is None:
            return True, "starting"
        if self.zone_missing:
            return False, f"the landing zone {self.settings.data_dir} does not exist"
        if not self.watcher.alive():
            return False, f"the {self.watcher.backend} observer thread stopped"
        busy = self.pass_started is not None or not self.started
        if not busy and self.clock() - self.heartbeat > HEARTBEAT_LIMIT_SECONDS:
            return False, "the main loop has not ticked for a minute"
        return True, f"ok ({self.watcher.backend})"

    def readiness(self) -> tuple[bool, str]:
        """Started, the database answers, the last dbt build did not fail (called by /readyz)."""
        if not self.started:
            return False, "starting: the backlog is being loaded"
        if not self.warm.is_set():
            return False, "starting: dbt is parsing the project"
        if self.stop_requested:
            return False, "stopping"
        up = self._database_answers()
        self.metrics.database_up.set(1 if up else 0)
        if not up:
            return False, "the database does not answer"
        if self.pass_started is not None and (waits := self.pipeline.lock_waits()):
            return False, f"waiting for a lock on {', '.join(waits)}"
        if self.pipeline.lock_problem:
            return False, self.pipeline.lock_problem
        if self.listing_problem:
            return False, f"the landing zone cannot be listed: {self.listing_problem}"
        if self.problem:
            return False, f"the last batch could not run: {self.problem}"
        if self.pipeline.last_build_failed:
            return False, "the last dbt build failed"
        return True, "ready"

    # Read by the HTTP threads at scrape time: one read of ``in_flight`` each, it may change.

    def _pending_count(self) -> float:
        flight = self.in_flight
        return float(len(self.tracker) + len(self.immediate) + (flight[0] if flight else 0))

    def _oldest_pending_age(self) -> float:
        flight = self.in_flight
        times = [
            t for t in (self.tracker.oldest_first_seen(), flight[1] if flight else None) if t is not None
        ]
        return max(0.0, self.clock() - min(times)) if times else 0.0


def _object_drop_times(entries: list[tuple[Candidate, str]]) -> dict[str, DropTimes]:
    """An object found by a poll was complete when it was put: its drop time is its Last-Modified
    (whole seconds), and it settled then too. The backlog at start has no drop to time."""
    return {
        candidate.relative: DropTimes(candidate.version.st_ctime, candidate.version.st_ctime)
        for candidate, origin in entries
        if origin == "event" and candidate.version is not None and candidate.version.etag is not None
    }


def _poller_for(zone: LandingZone) -> ChangeSource | None:
    if zone.settles:
        return None
    from watcher.landing.bucket import BucketPoller, BucketZone

    assert isinstance(zone, BucketZone)
    return BucketPoller(zone)


def _address(settings: Settings) -> str:
    host, port = settings.metrics_addr or ("", 0)
    return f"{host}:{port}"


def _relative(settings: Settings, path: str) -> str:
    try:
        return Path(path).relative_to(settings.data_dir).as_posix()
    except ValueError:
        return path
