"""The slower path for a file whose fast COPY failed: load the good rows, quarantine the bad.

Each line is checked in Python (a compiled pattern first, field parsing only for lines it
refuses). Good lines go to COPY with their line number; bad lines, exactly as they were in the
file, go to ``ops.rejected_rows`` with a reason. Rows are sent in segments, each under its own
savepoint, so that a line the server still refuses costs one segment, not the file. When the
file exceeds its error budget, none of its rows stay, but its bad lines are still recorded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import psycopg
from psycopg import sql

from watcher.loader import DATA_ERRORS, copy_error_line, read_header
from watcher.routes import Column, HeaderMapping, Route
from watcher.rowcheck import (
    RowError,
    Value,
    check_record,
    line_pattern,
    quotes_balanced,
    split_record,
)

SEGMENT_LINES = 50_000
SEGMENT_BYTES = 8 << 20


@dataclass
class QuarantineResult:
    sha256: str
    rows_loaded: int
    rows_rejected: int
    bytes_read: int
    mapping: HeaderMapping
    warnings: tuple[str, ...] = ()
    budget_exceeded_reason: str | None = None

    @property
    def warning_text(self) -> str | None:
        return "; ".join(self.warnings) or None


@dataclass(frozen=True)
class Budget:
    fraction: float
    rows: int

    def exceeded(self, rejected: int, total: int) -> str | None:
        if rejected > self.rows:
            return f"{rejected} bad rows exceed the error budget of {self.rows} rows"
        if total and rejected > self.fraction * total:
            return (
                f"{rejected} of {total} rows are bad ({rejected / total:.1%}), over the error"
                f" budget of {self.fraction:.1%}; no row of this file was loaded"
            )
        return None


@dataclass
class _Segment:
    lines: list[bytes] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    originals: list[bytes] = field(default_factory=list)
    size: int = 0

    def add(self, number: int, payload: bytes, original: bytes) -> None:
        self.lines.append(payload)
        self.numbers.append(number)
        self.originals.append(original)
        self.size += len(payload) + len(original)

    def full(self) -> bool:
        return len(self.lines) >= SEGMENT_LINES or self.size >= SEGMENT_BYTES


class _RejectSpool:
    """Bad lines wait in a temporary file (bounded memory) until the file's sha256 is known."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(mode="w+", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        self.count = 0

    def add(self, line_number: int, raw: bytes, reason: str) -> None:
        self._writer.writerow([line_number, show_raw_line(raw), reason])
        self.count += 1

    def copy_into_table(
        self, cur: psycopg.Cursor[Any], relative: str, sha256: str, table: str, run_id: int | None
    ) -> None:
        cur.execute("DELETE FROM ops.rejected_rows WHERE source_path = %s", (relative,))
        self._file.seek(0)
        statement = (
            "COPY ops.rejected_rows (line_number, raw_line, reason, source_path, source_sha256,"
            " target_table, run_id) FROM STDIN"
        )
        with cur.copy(statement) as copy:
            for line_number, raw, reason in csv.reader(self._file):
                copy.write_row((int(line_number), raw, reason, relative, sha256, table, run_id))
        self._file.close()


def show_raw_line(raw: bytes) -> str:
    """The line as text without its line end; bytes that are not UTF-8 (or NUL) are escaped."""
    text = raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", errors="backslashreplace")
    return text.replace("\x00", "\\x00")


def _lines(handle: BinaryIO, max_line_bytes: int, digest: Any) -> Iterator[tuple[bytes, bool]]:
    """Yield (line, too_long); a line over the bound is cut there and its rest is skipped."""
    while line := handle.readline(max_line_bytes + 1):
        digest.update(line)
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            while rest := handle.readline(max_line_bytes):
                digest.update(rest)
                if rest.endswith(b"\n"):
                    break
            yield line[:max_line_bytes], True
        else:
            yield line, False


def _project(values: list[Value]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(["" if v is None else _csv_value(v) for v in values])
    return out.getvalue().encode("utf-8")


def _csv_value(value: Value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


class _Checker:
    """Turns file lines into COPY payloads or reasons."""

    def __init__(self, file_columns: tuple[Column | None, ...]) -> None:
        self.file_columns = file_columns
        self.pattern = line_pattern(file_columns)
        self.keep = [i for i, c in enumerate(file_columns) if c is not None]
        self.project = len(self.keep) != len(file_columns)

    def check(self, content: bytes) -> bytes | RowError:
        if not content.strip():
            return RowError("empty line")
        if self.pattern.fullmatch(content):
            body = content.rstrip(b"\r")
            if self.project:
                cells = body.split(b",")
                body = b",".join(cells[i] for i in self.keep)
            return body
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            return RowError(f"not UTF-8 text (byte {exc.start + 1} of the line)")
        if "\x00" in text:
            return RowError("contains NUL bytes (binary data)")
        fields = split_record(text.rstrip("\r"))
        if isinstance(fields, RowError):
            return fields
        values = check_record(fields, self.file_columns)
        if isinstance(values, RowError):
            return values
        return _project(values)


def load_with_quarantine(
    conn: psycopg.Connection[Any],
    handle: BinaryIO,
    route: Route,
    relative: str,
    run_id: int | None,
    max_line_bytes: int,
    budget: Budget,
) -> QuarantineResult:
    """Load the good rows of ``handle`` (at its start) and record the bad ones."""
    header = read_header(handle, route, max_line_bytes)
    digest = hashlib.sha256(header.raw)
    total_bytes = len(header.raw)
    checker = _Checker(header.mapping.file_columns)
    columns = ("_line_number", *header.mapping.copy_columns)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(*route.qualified_table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    spool = _RejectSpool()
    loaded = 0
    with conn.transaction() as rows_savepoint, conn.cursor() as cur:
        segment = _Segment()
        line_number = 1
        pending = b""
        pending_start = 0
        for line, too_long in _lines(handle, max_line_bytes, digest):
            line_number += 1
            total_bytes += len(line)
            if too_long:
                spool.add(line_number, line, f"line longer than {max_line_bytes} bytes")
                pending = b""
                continue
            if pending:
                pending += line
                if not quotes_balanced(pending) and len(pending) <= max_line_bytes:
                    continue
                record, number, pending = pending, pending_start, b""
            elif not quotes_balanced(line):
                pending, pending_start = line, line_number
                continue
            else:
                record, number = line, line_number
            content = record[:-1] if record.endswith(b"\n") else record
            result = checker.check(content)
            if isinstance(result, RowError):
                spool.add(number, record, result.reason)
                continue
            segment.add(number, b"%d," % number + result + b"\n", record)
            if segment.full():
                loaded += _flush(conn, cur, statement, segment, spool)
                segment = _Segment()
        if pending:
            spool.add(pending_start, pending, "unterminated quoted field at the end of the file")
        loaded += _flush(conn, cur, statement, segment, spool)
        sha256 = digest.hexdigest()
        over = budget.exceeded(spool.count, loaded + spool.count)
        if over:
            loaded = 0
            raise psycopg.Rollback(rows_savepoint)
    with conn.cursor() as cur:
        spool.copy_into_table(cur, relative, sha256, route.table, run_id)
    return QuarantineResult(
        sha256,
        loaded,
        spool.count,
        total_bytes,
        header.mapping,
        header_warnings(header.mapping),
        over,
    )


def header_warnings(mapping: HeaderMapping) -> tuple[str, ...]:
    notes = []
    if mapping.extra_headers:
        notes.append(f"extra columns not loaded: {', '.join(mapping.extra_headers)}")
    if mapping.missing_optional:
        notes.append(f"optional columns missing, loaded as null: {', '.join(mapping.missing_optional)}")
    return tuple(notes)


def _flush(
    conn: psycopg.Connection[Any],
    cur: psycopg.Cursor[Any],
    statement: sql.Composed,
    segment: _Segment,
    spool: _RejectSpool,
) -> int:
    """COPY one segment; a line the server refuses is moved to the spool and the rest retried."""
    lines, numbers, originals = segment.lines, segment.numbers, segment.originals
    while lines:
        try:
            with conn.transaction(), cur.copy(statement) as copy:
                for payload in lines:
                    copy.write(payload)
            return len(lines)
        except DATA_ERRORS as exc:
            position = copy_error_line(exc)
            if position is None or not 2 <= position <= len(lines) + 1:
                raise
            index = position - 2
            spool.add(numbers[index], originals[index], _server_reason(exc))
            del lines[index], numbers[index], originals[index]
    return 0


def _server_reason(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    return getattr(diag, "message_primary", None) or str(exc).splitlines()[0]
