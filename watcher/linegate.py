"""A C-speed check of every line on the clean path, before the bytes reach COPY.

PostgreSQL's date input is lenient (``4/12/20a6`` reads as 2020-04-12, ``today`` as a date), so a
garbled value could load as a wrong one. Each block's complete lines are matched against the
route's pattern of ordinary lines (one ``re`` call per block, no per-row Python); a block with any
other line sends the file to the checked path, which judges line by line and quarantines.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from watcher.routes import Column
from watcher.rowcheck import plain_lines_pattern


class LineGate:
    def __init__(
        self,
        file_columns: tuple[Column | None, ...],
        header_line: bytes,
    ) -> None:
        self.eol = b"\r\n" if header_line.endswith(b"\r\n") else b"\n"
        self._file_columns = file_columns
        self._carry = b""

    # Compiled when a block first needs them (about 12 ms for both, once per process and route):
    # on the binary path most files never do (``passes``).
    @functools.cached_property
    def _common(self) -> re.Pattern[bytes]:
        return plain_lines_pattern(self._file_columns, self.eol, common=True)

    @functools.cached_property
    def _full(self) -> re.Pattern[bytes]:
        return plain_lines_pattern(self._file_columns, self.eol)

    def _plain(self, lines: bytes) -> bool:
        stop = self._common.match(lines).end()  # type: ignore[union-attr]  # `*+` always matches
        if stop == len(lines):
            return True
        return _ends_at(self._full, lines, _line_start(lines, stop), len(lines))

    def admit(self, block: bytes) -> bytes | None:
        """The lines ``block`` completes, line ends included, when every one is ordinary; None when
        one is not. The unfinished line at the end waits for the next block."""
        cut = block.rfind(b"\n")
        if cut < 0:
            self._carry += block
            return b""
        lines = self._carry + block[: cut + 1] if self._carry else block[: cut + 1]
        self._carry = block[cut + 1 :]
        return lines if self._plain(lines) else None

    def passes(self, block: bytes, vouch: Callable[[bytes, bytes, int], bool]) -> bool:
        """Whether every line ``block`` completes is ordinary, as ``admit`` judges, but without the
        pattern, nor a copy of the lines, where ``vouch(carry, block, end)`` vouches for the lines
        ``carry + block[:end]``: for a reader that checks itself what the pattern would have (the
        binary path: ``binary_copy``)."""
        cut = block.rfind(b"\n")
        if cut >= 0 and vouch(self._carry, block, cut + 1):
            self._carry = block[cut + 1 :]
            return True
        return self.admit(block) is not None

    def admit_end(self) -> bytes | None:
        """The last line when the file does not end with a line end (b"" when it does), or None
        when that line is not ordinary."""
        if not self._carry:
            return b""
        return self._carry if self._plain(self._carry + self.eol) else None


def _line_start(buffer: bytes, position: int) -> int:
    return buffer.rfind(b"\n", 0, position) + 1


def _ends_at(pattern: re.Pattern[bytes], buffer: bytes, start: int, end: int) -> bool:
    found = pattern.match(buffer, start)
    return found is not None and found.end() == end
