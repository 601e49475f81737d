"""Stopping the daemon: SIGTERM, SIGINT and SIGHUP, and cancelling what a stop would wait for."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

import structlog

from watcher.waker import Waker

log = structlog.get_logger(__name__)

STOP_GRACE_SECONDS = 5.0
"""After a stop request, the pass in flight may end by itself this long (a warm dbt build takes
1-3 s); then its statements are cancelled, so the process exits within 10 s even when a
statement waits for a lock."""
CANCEL_INTERVAL_SECONDS = 0.5


class Shutdown:
    """The stop request: set by the first signal, read by the loop, the pass and /readyz.

    A second signal ends the process at once.
    """

    def __init__(self, waker: Waker, cancel_statements: Callable[[], int]) -> None:
        self._waker = waker
        self._cancel_statements = cancel_statements
        self.requested = False
        self.signal: int | None = None
        """The signal that asked for the stop."""
        self._signals = 0
        self._event = threading.Event()
        """Set by the signal handler: wakes the thread that cancels what the pass waits for."""
        self.loop_done = threading.Event()
        """Set when the loop has ended: the canceller stops."""

    def install(self) -> None:
        # SIGHUP (the terminal went away, or a deliberate hang-up) stops cleanly, as SIGTERM does.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        signal.set_wakeup_fd(self._waker.write_fd, warn_on_full_buffer=False)

    def should_stop(self) -> bool:
        return self.requested

    def start_canceller(self) -> None:
        threading.Thread(target=self._cancel_on_stop, name="stop-canceller", daemon=True).start()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only flags here: logging from a signal handler can re-enter a stream mid-write.
        self._signals += 1
        if self._signals > 1:
            with contextlib.suppress(OSError):
                os.write(2, b'{"event": "shutdown_forced", "level": "warning"}\n')
            os._exit(128 + signum)
        self.requested = True
        self.signal = signum
        self._event.set()  # no I/O here: the canceller thread does it

    def _cancel_on_stop(self) -> None:
        """After a stop request and its grace period, cancel the statements the pass still waits
        for (a lock wait, a long dbt node), again every half second until the loop is done.

        A thread of its own: a signal handler must not do I/O, and the main thread is the one
        blocked in the statement.
        """
        self._event.wait()
        if self.loop_done.wait(STOP_GRACE_SECONDS):
            return
        told = False
        while not self.loop_done.is_set():
            asked = self._cancel_statements()
            if asked and not told:
                told = True
                log.warning(
                    "statements_cancelled", step="daemon", statements=asked, grace_s=STOP_GRACE_SECONDS
                )
            self.loop_done.wait(CANCEL_INTERVAL_SECONDS)
