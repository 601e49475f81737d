"""The daemon: the event loop around the pipeline, the start (backlog, warm-up), the stop.

Threads: watchdog's observer thread only records observations into the intake's ``Tracker``; the
HTTP endpoint answers in its own threads (``watcher.health``); everything else (loading, dbt, the
database) runs on the main thread, one batch at a time, with ONE ``Pipeline`` (and its warm dbt
project) for the life of the process. Builds therefore never overlap: files that settle during a
build wait for the next batch, and one follow-up build covers them all.

The loop: wake on an observation, a signal or a deadline; take every file that settled as one
batch; ``pipeline.run_pass`` it; repeat. Every ``reconcile_seconds`` a scan of the landing zone is
a backstop for lost events. Idle, the loop sleeps in ``epoll`` for seconds at a time.

Its parts, each held by the ``Daemon``: ``Intake`` (``watcher.intake``: the landing zone, what
waits for the next batch), ``BatchRunner`` (``watcher.batches``: the passes and their back-off),
``Health`` (``watcher.health``: /healthz, /readyz, the pending gauges), ``Shutdown``
(``watcher.shutdown``: signals, cancelling a stuck pass) and ``Waker`` (``watcher.waker``).
"""

from __future__ import annotations

import gc
import math
import signal
import sys
import threading
import time
from collections.abc import Callable

import psycopg
import structlog

from watcher.batches import BatchRunner
from watcher.config import Settings
from watcher.database_steps import DatabaseUnavailable
from watcher.errortext import first_line
from watcher.health import Health
from watcher.http_endpoint import HttpEndpoint
from watcher.intake import Intake
from watcher.inventory import log_inventory
from watcher.landing.observer import listen_for_overflow, stop_listening
from watcher.metrics import Metrics
from watcher.pass_result import EXIT_OK, EXIT_USAGE
from watcher.pipeline import Pipeline
from watcher.shutdown import Shutdown
from watcher.waker import Waker

log = structlog.get_logger(__name__)

IDLE_TICK_SECONDS = 5.0
"""Longest sleep of the loop: the heartbeat /healthz looks at."""
MIN_CHECK_INTERVAL_SECONDS = 0.05
"""A burst of events is looked at 20 times a second at most, not once per event."""


def run_daemon(settings: Settings, url: str) -> int:
    """Watch the landing zone until SIGTERM or SIGINT; 0 after a clean stop."""
    from watcher.commands import make_pipeline

    pipeline = make_pipeline(settings, url, Metrics())
    try:
        return Daemon(settings, pipeline).run()
    finally:
        pipeline.close()


class Daemon:
    def __init__(
        self, settings: Settings, pipeline: Pipeline, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self.clock = clock
        self.waker = Waker()
        self.shutdown = Shutdown(self.waker, pipeline.cancel_statements)
        pipeline.stop.check = self.shutdown.should_stop  # also cuts database retries short on a stop
        self.intake = Intake(settings, pipeline, self.waker, clock=clock)
        self.batches = BatchRunner(
            settings, pipeline, self.intake, should_stop=self.shutdown.should_stop, clock=clock
        )
        self.health = Health(
            settings, pipeline, self.intake, self.batches, stopping=self.shutdown.should_stop, clock=clock
        )
        self.announced = False

    # -- lifecycle ----------------------------------------------------------------------------------

    def run(self) -> int:
        self.shutdown.install()
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
        overflow = listen_for_overflow(self.intake.request_rescan)
        self.shutdown.start_canceller()
        try:
            log.info(
                "daemon_starting",
                data_dir=self.settings.landing,
                debounce_s=self.settings.debounce_seconds,
                reconcile_s=self.settings.reconcile_seconds,
                database=self.settings.redacted_database(),
            )
            log_inventory(self.intake.zone, self.pipeline.db.url)
            self.intake.start_watching()
            self._start_backlog()
            while not self.shutdown.requested:
                self._step()
            log.info(
                "shutdown_requested",
                step="daemon",
                signal=signal.Signals(self.shutdown.signal).name if self.shutdown.signal else None,
                in_flight=self.batches.in_flight is not None,
            )
        finally:
            self.shutdown.loop_done.set()
            stop_listening(overflow)
            self.intake.stop_watching()
            if endpoint is not None:
                endpoint.stop()
            # The waker's pipe stays open: a late signal or thread may still write to it.
        log.info("daemon_stopped", step="daemon", status="success")
        return EXIT_OK

    def _start_endpoint(self) -> HttpEndpoint | None:
        if self.settings.metrics_addr is None:
            return None
        host, port = self.settings.metrics_addr
        endpoint = HttpEndpoint(host, port, liveness=self.health.liveness, readiness=self.health.readiness)
        endpoint.start()
        self.metrics.files_pending.set_function(self.health.pending_count)
        self.metrics.oldest_pending_age.set_function(self.health.oldest_pending_age)
        log.info("metrics_endpoint_started", address=f"{host}:{endpoint.port}")
        return endpoint

    def _start_backlog(self) -> None:
        """Files present but not in the manifest: one ``startup`` batch, while dbt warms up.

        The parse (seconds) runs in a thread: a stop request is not held up by it, and the
        backlog loads meanwhile (its build waits for the parse).
        """
        threading.Thread(target=self._warm_up, name="dbt-warm-up", daemon=True).start()
        self.intake.reconcile()
        if not self.shutdown.requested:
            self._step(startup=True)
        if not self.shutdown.requested:
            self._catch_up()
        self.health.started = True

    def _catch_up(self) -> None:
        """Build what an earlier process loaded but never built (it was killed in between)."""
        try:
            self.pipeline.catch_up()
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("catch_up_build_skipped", step="startup", error=first_line(exc))

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
            self.health.warm.set()
            self.waker.wake()

    # -- the loop -----------------------------------------------------------------------------------

    def _step(self, *, startup: bool = False) -> None:
        now = self.clock()
        self.health.heartbeat = now
        if not startup:
            self.intake.check_landing_zone()
        if not self.announced and self.health.started and self.health.warm.is_set():
            self.announced = True
            watcher = self.intake.watcher
            log.info("daemon_ready", step="startup", backend=watcher.backend if watcher else None)
        if not startup and self.intake.reconcile_due(now):
            self.intake.reconcile()
            self.batches.retry_build()
        elif not startup and self.intake.poll_due(now):
            self.intake.poll_bucket()
        if now >= self.batches.retry_at:
            batch, deadline = self.intake.tracker.take_settled()
            if batch or self.intake.immediate:
                self.batches.run(batch)
                return
        else:
            deadline = self.batches.retry_at
        if startup:
            return
        self.health.check_database(now)
        self._sleep(now, deadline)

    def _sleep(self, now: float, deadline: float | None) -> None:
        until = min(
            deadline if deadline is not None else math.inf,
            self.intake.next_reconcile,
            now + IDLE_TICK_SECONDS,
        )
        if self.intake.poller is not None:
            until = min(until, max(self.intake.next_poll, now))
        if self.batches.retry_at > now:
            until = min(max(until, self.batches.retry_at), now + IDLE_TICK_SECONDS)
        self.waker.wait(until - now)
        # A burst wakes the loop on almost every event: look at most every few tens of ms.
        if len(self.intake.tracker) and not self.shutdown.requested:
            spare = MIN_CHECK_INTERVAL_SECONDS - (self.clock() - now)
            if spare > 0:
                time.sleep(spare)


def _address(settings: Settings) -> str:
    host, port = settings.metrics_addr or ("", 0)
    return f"{host}:{port}"
