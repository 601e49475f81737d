"""Progress of a pass over many or large files, on a terminal only."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any


class Progress:
    """Files done of total, MB/s and rows/s; silent unless enabled (a terminal, no --json)."""

    def __init__(self, total_files: int, total_bytes: int, *, enabled: bool) -> None:
        self.total_files = total_files
        self.files_done = 0
        self.rows = 0
        self._started = time.monotonic()
        self._bar: Any = None
        if enabled and total_files:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_bytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1 << 20,
                desc=f"files 0/{total_files}",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )

    @staticmethod
    def wanted(json_output: bool) -> bool:
        return not json_output and sys.stderr.isatty()

    def advance_bytes(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def file_done(self, rows: int) -> None:
        self.files_done += 1
        self.rows += rows
        if self._bar is not None:
            elapsed = max(time.monotonic() - self._started, 1e-6)
            self._bar.set_description(f"files {self.files_done}/{self.total_files}")
            self._bar.set_postfix_str(f"{self.rows / elapsed:,.0f} rows/s")

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()
