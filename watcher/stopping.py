"""A stop request: the owner's question, the exception that ends a pass, waits a stop cuts short."""

from __future__ import annotations

import time
from collections.abc import Callable

from tenacity import RetryCallState
from tenacity.stop import stop_base


class PassInterrupted(Exception):
    """The caller asked the pass to stop: the file in flight rolls back, the others wait."""


class StopRequest:
    """The owner's stop question, shared by the pass, its database steps and its builds."""

    def __init__(self) -> None:
        self.check: Callable[[], bool] | None = None
        """Set by a long-running owner (the daemon): True ends retries early and stops passes."""

    def asked(self) -> bool:
        return self.check is not None and self.check()

    def sleep(self, seconds: float) -> None:
        """``time.sleep``, cut short by a stop request (a retry policy's own sleep would not be)."""
        deadline = time.monotonic() + seconds
        while not self.asked() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.1, left))


class StopWhen(stop_base):
    """A tenacity stop condition: the owner asked to stop."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self.check = check

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.check()
