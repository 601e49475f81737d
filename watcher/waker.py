"""The daemon's wake-up call: a self-pipe that ends the loop's wait early."""

from __future__ import annotations

import contextlib
import os
import selectors


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
