"""Random mutations of a valid file never crash the loader and never load a row that differs
from its line.

Each example writes a valid daily-activity file, damages it (flipped bytes, deleted or doubled
characters, inserted commas, quotes and line ends, truncation) and loads it in-process. Then the
file is read again here, with a parser of its own (not the loader's), and every loaded row must
equal the record at its ``_line_number``, field by field; every bad line recorded must be the
file's line; and when the file has no quote at all, every line that is plainly valid is loaded.

Values are compared with a strict reading of the usual spellings; for a value in another
spelling, PostgreSQL's own reading (``SELECT text::type``) is the reference: the fast path hands
the text to the server as it is, so what the server makes of it is what a faithful row holds.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from tests.conftest import with_dbname
from tests.helpers import DAILY_HEADER
from watcher import quarantine
from watcher.database import migrate
from watcher.ingest import LoadLimits, process_file
from watcher.landing.scanner import inspect_entry
from watcher.routes import DAILY_ACTIVITY, ColumnType, map_header

FILE_NAME = "dailyActivity_mutated.csv"
SPACE = " \t\n\r\v\f"


@pytest.fixture(scope="module")
def mutation_db(pg_admin_url: str) -> Iterator[str]:
    name = f"wp_mut_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_dbname(pg_admin_url, name)
    migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- a valid file ------------------------------------------------------------------------------


@st.composite
def valid_line(draw: st.DrawFn, index: int) -> bytes:
    day = draw(st.dates(date(2015, 1, 1), date(2017, 12, 31)))
    steps = draw(st.integers(0, 40_000))
    fields = [
        str(1503960366 + index),
        f"{day.month}/{day.day}/{day.year}",
        str(steps),
        *(
            draw(st.sampled_from(["", "0", f"{steps / 1300:.13f}", "7.1100001335144", "1e3", "2.5E-2"]))
            for _ in range(7)
        ),
        *(draw(st.sampled_from(["", "0", "13", "1440", " 25 "])) for _ in range(5)),
    ]
    if draw(st.booleans()) and draw(st.booleans()):
        at = draw(st.integers(0, len(fields) - 1))
        if fields[at]:
            fields[at] = '"' + fields[at] + '"'
    return ",".join(fields).encode()


NOTES = st.sampled_from(
    [b"", b"ok", b'"a, b"', b'"two\nlines"', b'"three\r\nlines\nhere"', b"\xc3\xa9t\xc3\xa9"]
)


@st.composite
def valid_file(draw: st.DrawFn) -> bytes:
    """A valid export; sometimes with an extra Notes column whose quoted text spans lines."""
    count = draw(st.integers(1, 25))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    notes = draw(st.integers(0, 3)) == 0
    lines = [DAILY_HEADER.encode() + (b",Notes" if notes else b"")]
    for i in range(count):
        line = draw(valid_line(i))
        lines.append(line + b"," + draw(NOTES) if notes else line)
    return eol.join(lines) + (eol if draw(st.booleans()) else b"")


@st.composite
def mutated_file(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_file()))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "delete", "double", "insert", "truncate", "digit"]))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[at]
        elif kind == "double":
            data.insert(at, data[at])
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from([b",", b'"', b"\n", b"\r\n", b"\r", b'""', b" ", b"\\.\n"]))
        elif kind == "digit":
            data[at] = draw(st.sampled_from(b"0123456789"))
        elif draw(st.integers(0, 3)) == 0:  # truncation, rarer: it tends to end the example early
            del data[at:]
    return bytes(data)


# -- an independent reading of the file --------------------------------------------------------

_FIELD = re.compile(rb'((?:"(?:[^"]|"")*"|[^,"])*)(,|\Z)')


def fields_of(record: bytes) -> list[tuple[str, bool]] | None:
    """PostgreSQL's CSV reading of one record: (text, quoted) per field; None if malformed."""
    out: list[tuple[str, bool]] = []
    pos = 0
    while True:
        m = _FIELD.match(record, pos)
        if m is None:
            return None
        raw = m.group(1)
        quoted = b'"' in raw
        text = re.sub(rb'"((?:[^"]|"")*)"', lambda q: q.group(1).replace(b'""', b'"'), raw)
        out.append((text.decode("utf-8"), quoted))
        if m.group(2) == b"":
            if m.end() != len(record):
                return None
            return out
        pos = m.end()


def strict_value(text: str, kind: ColumnType) -> Any:
    """The usual spellings only; ``ValueError`` for anything else."""
    value = text.strip(SPACE)
    if kind in (ColumnType.BIGINT, ColumnType.INTEGER):
        if not re.fullmatch(r"[-+]?[0-9]+", value):
            raise ValueError(value)
        return int(value)
    if kind is ColumnType.DOUBLE:
        if not re.fullmatch(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", value):
            raise ValueError(value)
        return float(value)
    m = re.fullmatch(r"([0-9]{1,2})/([0-9]{1,2})/([1-9][0-9]{3})", value)
    if not m:
        raise ValueError(value)
    return date(int(m.group(3)), int(m.group(1)), int(m.group(2))).isoformat()


def server_value(conn: psycopg.Connection[Any], text: str, kind: ColumnType) -> Any:
    """PostgreSQL's reading of the text (a date as ISO text: the server reads years psycopg cannot)."""
    cast = "{}::date::text" if kind is ColumnType.DATE else "{}::" + kind.value
    row = conn.execute(sql.SQL("SELECT " + cast).format(sql.Literal(text))).fetchone()
    return row[0] if row else None


def record_at(lines: list[bytes], number: int) -> bytes:
    """The record starting on physical line ``number`` (1-based), over several lines if a quote
    is open at a line end."""
    parts = [lines[number - 1]]
    while sum(p.count(b'"') for p in parts) % 2 and number - 1 + len(parts) < len(lines):
        parts.append(lines[number - 1 + len(parts)])
    record = b"".join(parts)
    if record.endswith(b"\n"):
        record = record[:-1]
    if record.endswith(b"\r"):
        record = record[:-1]
    return record


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=mutated_file())
def test_mutations_never_crash_and_never_load_a_wrong_row(
    content: bytes, mutation_db: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    load_and_check(content, mutation_db, tmp_path_factory)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=mutated_file())
def test_mutations_with_tiny_blocks_and_segments(
    content: bytes,
    mutation_db: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same, with blocks and segments of a few lines: every boundary case comes up."""
    monkeypatch.setattr(quarantine, "BLOCK_SIZE", 97)
    monkeypatch.setattr(quarantine, "SEGMENT_BYTES", 300)
    monkeypatch.setattr(quarantine, "SIDE_SEGMENT_ROWS", 2)
    load_and_check(content, mutation_db, tmp_path_factory)


def load_and_check(content: bytes, mutation_db: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    lake = tmp_path_factory.mktemp("mut")
    path = lake / FILE_NAME
    path.write_bytes(content)
    with psycopg.connect(mutation_db) as conn:
        conn.execute(
            "TRUNCATE raw.daily_activity, ops.rejected_rows, ops.raw_ingest_manifest, ops.file_loads"
        )
        conn.commit()
        limits = LoadLimits(error_budget_fraction=1.0, error_budget_rows=10**6)
        outcome = process_file(conn, inspect_entry(lake, path), run_id=None, limits=limits)
        conn.commit()
        assert outcome.outcome in ("loaded", "rejected"), outcome
        assert outcome.reason is None or "\n" not in outcome.reason
        check_loaded_file(conn, content, outcome.outcome)
        conn.rollback()


def check_loaded_file(
    conn: psycopg.Connection[Any], content: bytes, outcome: str, source_path: str = "%"
) -> None:
    """Every row loaded from the file equals its record; every bad line recorded is the file's."""
    conn.execute("SET DateStyle = 'ISO, MDY'")
    rows = conn.execute(
        sql.SQL(
            "SELECT _line_number, {} FROM raw.daily_activity"
            " JOIN ops.file_loads l ON l.load_id = _load_id WHERE l.source_path LIKE %s ORDER BY 1"
        ).format(
            sql.SQL(", ").join(
                sql.SQL("{}::text").format(sql.Identifier(c.name))
                if c.type is ColumnType.DATE
                else sql.Identifier(c.name)
                for c in DAILY_ACTIVITY.columns
            )
        ),
        (source_path,),
    ).fetchall()
    rejected = conn.execute(
        "SELECT line_number, raw_line FROM ops.rejected_rows WHERE source_path LIKE %s ORDER BY 1",
        (source_path,),
    ).fetchall()
    check_rows(conn, content, rows, rejected, outcome)


def check_rows(
    conn: psycopg.Connection[Any],
    content: bytes,
    rows: list[tuple[Any, ...]],
    rejected: list[tuple[Any, ...]],
    outcome: str,
) -> None:
    lines = _split_on_lf(content)
    if outcome != "loaded":
        assert rows == []
        return
    header = lines[0].rstrip(b"\r\n").decode("utf-8-sig")
    mapping = map_header([c.strip().strip('"') for c in header.split(",")], DAILY_ACTIVITY)
    loaded_numbers = [r[0] for r in rows]
    assert len(set(loaded_numbers)) == len(loaded_numbers)
    assert not set(loaded_numbers) & {r[0] for r in rejected}
    for row in rows:
        number = row[0]
        assert 2 <= number <= len(lines)
        fields = fields_of(record_at(lines, number))
        assert fields is not None and len(fields) == len(mapping.file_columns), (number, lines[number - 1])
        by_name = {c.name: f for c, f in zip(mapping.file_columns, fields, strict=True) if c is not None}
        for column, loaded in zip(DAILY_ACTIVITY.columns, row[1:], strict=True):
            if column.name not in by_name:
                assert loaded is None
                continue
            text, quoted = by_name[column.name]
            if text == "" and not quoted:
                assert loaded is None, (number, column.name)
                continue
            try:
                expected = strict_value(text, column.type)
            except ValueError:
                expected = server_value(conn, text, column.type)
            assert same(loaded, expected), (number, column.name, text, loaded)
    for number, raw_line in rejected:
        first = lines[number - 1].rstrip(b"\n").rstrip(b"\r")
        shown = first.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
        assert raw_line.startswith(shown), (number, raw_line, shown)
    if b'"' not in content:
        plainly_valid = [n for n in range(2, len(lines) + 1) if _plainly_valid(lines[n - 1], mapping)]
        missing = set(plainly_valid) - set(loaded_numbers)
        assert not missing, f"good lines not loaded: {sorted(missing)}"


def _split_on_lf(content: bytes) -> list[bytes]:
    """Physical lines as the loader counts them: ended by LF only (a CR alone is no line end)."""
    parts = content.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _plainly_valid(line: bytes, mapping: Any) -> bool:
    record = line.rstrip(b"\n").rstrip(b"\r")
    if b"\x00" in record:
        return False
    try:
        record.decode("utf-8")
    except UnicodeDecodeError:
        return False
    try:
        fields = fields_of(record)
    except UnicodeDecodeError:
        return False
    if (
        fields is None
        or len(fields) != len(mapping.file_columns)
        or "\r" in record.decode("utf-8", "replace")
    ):
        return False
    for column, (text, _quoted) in zip(mapping.file_columns, fields, strict=True):
        if column is None:
            continue
        if text == "":
            if column.required:
                return False
            continue
        try:
            strict_value(text, column.type)
            if column.type in (ColumnType.INTEGER, ColumnType.BIGINT):
                bound = 2**31 if column.type is ColumnType.INTEGER else 2**63
                if not -bound <= int(text.strip(SPACE)) < bound:
                    return False
            if column.type is ColumnType.DOUBLE and _out_of_range(text.strip(SPACE)):
                return False
        except ValueError:
            return False
    return True


def _out_of_range(number: str) -> bool:
    """PostgreSQL refuses a double that overflows, or underflows to zero."""
    value = float(number)
    mantissa = re.split("[eE]", number)[0]
    return math.isinf(value) or (value == 0.0 and any(c in "123456789" for c in mantissa))


def test_the_reference_parser_reads_like_postgresql() -> None:
    assert fields_of(b'1,"a,b",c"d"e,,""') == [
        ("1", False),
        ("a,b", True),
        ("cde", True),
        ("", False),
        ("", True),
    ]
    assert record_at([b'1,"x\n', b'y",2\n', b"3\n"], 1) == b'1,"x\ny",2'
    assert _split_on_lf(b"a\r\nb\rc\n") == [b"a\r\n", b"b\rc\n"]
    assert _out_of_range("1e400") and _out_of_range("0." + "0" * 330 + "1")
    assert not _out_of_range("0." + "0" * 310 + "1") and not _out_of_range("-0.000")
    assert isinstance(Path, type)
