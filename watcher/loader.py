"""Stream one file into its raw table with COPY, hashing it in the same pass.

This is the text path; a large clean file goes in COPY's binary format first
(``binary_copy``), with the same gate and the same guarantees, and comes back here when pyarrow
objects to it.

The clean path runs no Python statement per row: the file's lines after the header go to
``COPY ... FROM STDIN`` (text format, or CSV for a quoted file) in blocks of 64 KiB, each line
behind its line number (``linenumbers``), and the load id is filled by the table's default. Problems are raised as
``FileProblem`` (the file's own fault: never retried) or ``RowProblem`` (a line the server could
not parse: the caller may quarantine rows).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg import sql

from watcher.errortext import first_line
from watcher.linegate import LineGate
from watcher.linenumbers import number_lines
from watcher.routes import HeaderMapping, Route, map_header

BLOCK_SIZE = 1 << 20
STREAM_BLOCK_SIZE = 64 << 10
"""Bytes checked, numbered and sent at a time on the clean path. While the client works on a
block the server lives on what the socket holds, about 200 KiB on a Unix socket: with 1 MiB
blocks the server sat idle for part of every block (a load took 1.4 times as long on the embedded
server); with 64 KiB it never waits (docs/design-decisions.md)."""

DATA_ERRORS: tuple[type[Exception], ...] = (
    psycopg.DataError,  # class 22: bad number, date, encoding, field count, COPY format...
    psycopg.IntegrityError,  # class 23: a constraint of the raw table
)


class FileProblem(Exception):
    """The file cannot be loaded as a whole; the message is the reason shown to the user."""

    def __init__(self, reason: str, *, status: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RowProblem(Exception):
    """The server rejected a line during COPY; ``line_number`` counts from 1 at the header."""

    def __init__(self, reason: str, line_number: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line_number = line_number


@dataclass(frozen=True)
class Header:
    cells: list[str]
    raw: bytes
    mapping: HeaderMapping


@dataclass
class StreamResult:
    sha256: str
    rows: int
    bytes_read: int
    header: Header


ProgressCallback = Callable[[int], None]

_CONTEXT_LINE = re.compile(r"line (\d+)")


_MAGIC = (
    (b"\x1f\x8b", "a gzip-compressed file, not CSV text (decompress it first)"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?), not CSV text (export it as CSV)"),
    (b"%PDF", "a PDF document, not CSV text"),
    (b"\x89PNG", "a PNG image, not CSV text"),
    (b"\xff\xfe", "UTF-16 text (save it as UTF-8 CSV)"),
    (b"\xfe\xff", "UTF-16 text (save it as UTF-8 CSV)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls workbook, not CSV text (export it as CSV)"),
)


def too_long_problem(line_number: int, max_line_bytes: int) -> FileProblem:
    return FileProblem(
        f"line {line_number} is longer than {max_line_bytes:,} bytes; nothing of this file was loaded"
        " (is it really a CSV export?)"
    )


def read_header(handle: BinaryIO, route: Route, max_line_bytes: int) -> Header:
    """Read and check the header line; the handle is left at the start of the first row."""
    raw = handle.readline(max_line_bytes + 1)
    if not raw:
        raise FileProblem("the file is empty")
    for magic, what in _MAGIC:
        if raw.startswith(magic):
            raise FileProblem(f"the file is {what}")
    if b"\x00" in raw:
        raise FileProblem("the file is binary, not a CSV text file (it contains NUL bytes)")
    if b"\r" in raw.rstrip(b"\r\n"):
        raise FileProblem(
            "lines end with a bare carriage return (CR, old Mac style); save the file with LF or CRLF line ends"
        )
    if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
        raise FileProblem(
            f"the header line is longer than {max_line_bytes:,} bytes (is it really a CSV export?)"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileProblem(
            f"the file is not UTF-8 text (byte {exc.start + 1} of the header is 0x{raw[exc.start]:02x});"
            " save it as UTF-8 CSV"
        ) from exc
    line = text.rstrip("\r\n")
    if not line.strip():
        raise FileProblem("the first line is empty; a CSV export starts with its header line")
    cells = [c.strip().strip('"') for c in line.split(",")]
    mapping = map_header(cells, route)
    if mapping.duplicate_headers:
        raise FileProblem(f"columns appear twice in the header: {', '.join(mapping.duplicate_headers)}")
    if mapping.missing_required:
        if not any(c is not None for c in mapping.file_columns):
            separator = next((s for s in (";", "\t", "|") if s in line), None)
            hint = f"; the header is separated by {separator!r}, not by commas" if separator else ""
            raise FileProblem(
                f"the header names none of the columns of raw.{route.table}"
                f" (expected {', '.join(c.header for c in route.required_columns)}){hint}"
            )
        raise FileProblem(f"required columns missing: {', '.join(mapping.missing_required)}")
    return Header(cells, raw, mapping)


def prepare_load(cur: psycopg.Cursor[Any], route: Route, load_id: int) -> None:
    """Session state the raw table's lineage defaults read, scoped to this transaction."""
    cur.execute("SET LOCAL DateStyle = 'ISO, MDY'")
    cur.execute("SELECT set_config('wearable.load_id', %s, true)", (str(load_id),))
    # Both paths write each line's number into their stream: no table-wide sequence is touched,
    # so loads into one table from several connections never wait for each other.


CSV_OPTIONS = sql.SQL("FORMAT csv")
PLAIN_TEXT_OPTIONS = sql.SQL("FORMAT text, DELIMITER ',', NULL ''")
"""COPY's text format reads unquoted, backslash-free lines as CSV does (an empty field is NULL),
and the server reads it 6 to 10 % faster than CSV (docs/design-decisions.md)."""


def copy_statement(
    route: Route,
    columns: tuple[str, ...],
    options: sql.Composable = CSV_OPTIONS,
    table: sql.Identifier | None = None,
) -> sql.Composed:
    """COPY into the route's raw table, or into ``table`` (a load's own table, ``load_tables``)."""
    return sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
        table or sql.Identifier(*route.qualified_table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        options,
    )


def fast_copy_statement(route: Route, mapping: HeaderMapping, *, quoted: bool) -> sql.Composed:
    """COPY of numbered lines (``linenumbers``), every one admitted by the ``LineGate`` first.

    The lines admitted are plain values: no backslash, and quotes only around a whole value.
    Without quotes the text format reads them as CSV would, for less work on the server.
    No WHERE clause: the gate admits only lines whose required values are present and whose
    dates have years 1000 to 9999 (PostgreSQL reads ``4/12/201`` as the year 201), which is what
    a filter would otherwise check on the server for every row."""
    options = CSV_OPTIONS if quoted else PLAIN_TEXT_OPTIONS
    return copy_statement(route, ("_line_number", *mapping.copy_columns), options)


def stream_copy(
    cur: psycopg.Cursor[Any],
    handle: BinaryIO,
    route: Route,
    max_line_bytes: int,
    progress: ProgressCallback | None = None,
) -> StreamResult:
    """COPY the rest of the file after its header, hashing every byte read, header included."""
    header = read_header(handle, route, max_line_bytes)
    if header.mapping.needs_projection:
        raise RowProblem("the file has extra columns; rows are projected line by line", None)
    digest = hashlib.sha256(header.raw)
    total = len(header.raw)
    newlines = 0
    since_newline = 0
    gate = LineGate(header.mapping.file_columns, header.raw)
    block = handle.read(STREAM_BLOCK_SIZE)
    quoted = b'"' in block  # decided by the first block: a tool that quotes, quotes every line
    try:
        with cur.copy(fast_copy_statement(route, header.mapping, quoted=quoted)) as copy:
            while block:
                digest.update(block)
                total += len(block)
                first_line = newlines + 2  # of the lines this block completes; the header is 1
                newlines += block.count(b"\n")
                since_newline = bytes_after_last_newline(block, since_newline)
                if since_newline > max_line_bytes:
                    raise too_long_problem(newlines + 2, max_line_bytes)
                lines = gate.admit(block)
                if lines is None:
                    raise RowProblem(
                        "some lines are not plain values; the file is checked line by line", None
                    )
                if not quoted and b'"' in lines:
                    raise RowProblem(
                        "quoted values after unquoted lines; the file is checked line by line", None
                    )
                copy.write(number_lines(lines, first_line))
                if progress is not None:
                    progress(len(block))
                block = handle.read(STREAM_BLOCK_SIZE)
            last = gate.admit_end()
            if last is None or (not quoted and b'"' in last):
                raise RowProblem("the last line is not plain values; the file is checked line by line", None)
            copy.write(number_lines(last, newlines + 2))
    except DATA_ERRORS as exc:
        raise RowProblem(describe_copy_error(exc), copy_error_line(exc)) from exc
    body_lines = newlines + (1 if since_newline else 0)
    if body_lines != cur.rowcount:
        # A safety net: the gate admits only lines that are one row each (no quoted line ends, no
        # end-of-data marker), so the server's count and the file's agree.
        raise RowProblem("some lines are not one row each; the file is checked line by line", None)
    return StreamResult(digest.hexdigest(), cur.rowcount, total, header)


def bytes_after_last_newline(block: bytes, carried: int) -> int:
    """Length of the unfinished line at the end of ``block`` (bounded memory for huge lines)."""
    cut = block.rfind(b"\n")
    return carried + len(block) if cut < 0 else len(block) - cut - 1


def copy_error_line(exc: BaseException) -> int | None:
    """File line number of a COPY error (COPY counts from the first row; the header is line 1)."""
    context = getattr(getattr(exc, "diag", None), "context", None) or ""
    match = _CONTEXT_LINE.search(context)
    return int(match.group(1)) + 1 if match else None


def describe_copy_error(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or first_line(exc)
    line = copy_error_line(exc)
    return f"line {line}: {primary}" if line else primary


def open_for_reading(path: Path) -> BinaryIO:
    """Open a regular file for reading; FileProblem when it vanished or is not a file.

    The open does not wait: a pipe that took the file's place would otherwise block the pass."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise FileProblem("the file disappeared before it could be read", status="failed") from exc
    except IsADirectoryError as exc:
        raise FileProblem("a directory, not a file") from exc
    except PermissionError as exc:
        raise FileProblem("the file cannot be read: permission denied", status="failed") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise FileProblem(
            "a directory, not a file" if stat.S_ISDIR(mode) else "not a regular file (device, socket or pipe)"
        )
    os.set_blocking(fd, True)
    return open(fd, "rb", buffering=BLOCK_SIZE)
