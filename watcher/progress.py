"""Progress of a pass over many or large files, on a terminal only.

The bar counts the files that will be read (a route takes them and they can be opened), not
the ignored ones, in bytes shown in decimal units (kB, MB: 1 MB = 1,000,000 bytes) and rows/s.
Log lines written while the bar shows go above it through tqdm's own writer: structlog writes
into ``BarSafeStream``, and standard ``logging`` is redirected with ``logging_redirect_tqdm``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TextIO

from watcher.landing.zone import Candidate
from watcher.routes import route_for

BAR_FORMAT = "{l_bar}{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

_active = threading.Event()
"""Set while a bar is on the terminal: log lines then go through ``tqdm.write``."""


def will_be_read(candidate: Candidate) -> bool:
    """True for a file the pass opens: readable, and a route takes its name."""
    return candidate.problem is None and route_for(os.path.basename(candidate.relative)) is not None


def _size(candidate: Candidate) -> int:
    try:
        return candidate.hint().st_size
    except OSError:
        return 0


class Progress:
    """Files done of those to read, MB/s and rows/s; silent unless enabled (a terminal, no --json)."""

    def __init__(self, candidates: Sequence[Candidate], *, enabled: bool) -> None:
        readable = [c for c in candidates if will_be_read(c)]
        self._to_read = {c.relative for c in readable}
        self.total_files = len(readable)
        self.files_done = 0
        self.rows = 0
        self._started = time.monotonic()
        self._bar: Any = None
        self._redirect: contextlib.AbstractContextManager[Any] | None = None
        if enabled and self.total_files:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(
                total=sum(_size(c) for c in readable),
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                desc=self._description(),
                bar_format=BAR_FORMAT,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()
            _active.set()

    @staticmethod
    def wanted(json_output: bool) -> bool:
        return not json_output and sys.stderr.isatty()

    def _description(self) -> str:
        return f"files {self.files_done}/{self.total_files}"

    def advance_bytes(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def file_done(self, relative: str, rows: int) -> None:
        """One candidate answered; only the files that were to be read count."""
        if relative not in self._to_read:
            return
        self.files_done += 1
        self.rows += rows
        if self._bar is not None:
            elapsed = max(time.monotonic() - self._started, 1e-6)
            self._bar.set_description_str(self._description(), refresh=False)
            self._bar.set_postfix_str(f"{self.rows / elapsed:,.0f} rows/s")

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            _active.clear()
            if self._redirect is not None:
                self._redirect.__exit__(None, None, None)
            self._bar.close()


class BarSafeStream:
    """A text stream for the log renderer: whole lines, written above a progress bar if one shows.

    Without a target it writes to whatever ``sys.stderr`` is at the time of the write, so that a
    caller that swaps the stream (a test harness, a redirect) never leaves logging on a closed one.
    """

    def __init__(self, target: TextIO | None = None) -> None:
        self._fixed = target
        self._pending = ""

    @property
    def _target(self) -> TextIO:
        return self._fixed if self._fixed is not None else sys.stderr

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if _active.is_set():
                from tqdm import tqdm

                tqdm.write(line, file=self._target)
            else:
                self._target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()
