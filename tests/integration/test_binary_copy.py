"""The binary clean path against the text path: the same rows, rejects and reasons, always.

Every file here is loaded twice in-process, once with the binary COPY taking every file it can
and once with the text path only, into the same database (emptied between the two); the
outcomes must be identical: the manifest's verdict and reason, every column of every row with its
``_line_number``, every line in ``ops.rejected_rows`` with its reason, the sha256. The inputs: the
bad-input corpus, the random mutations of ``test_bad_input_mutations`` and files of unusual but
valid spellings (a ``+`` sign, white space, exponents, ``NaN``, February 30th, times of day, BOM,
CR LF...), where a lenient parser would differ from PostgreSQL first.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from tests.bad_inputs import Case, all_cases, build_lake, csv_bytes, daily_line, sleep_line
from tests.conftest import scratch_database
from tests.helpers import DAILY_HEADER, DROP_OWN_TABLES, SLEEP_HEADER, own_tables
from tests.integration.test_bad_input_mutations import check_loaded_file, mutated_file
from watcher import arrow_rows, binary_copy
from watcher.database import migrate
from watcher.ingest import LoadLimits, process_file
from watcher.landing.scanner import inspect_entry
from watcher.load_tables import own_table_name
from watcher.routes import DAILY_ACTIVITY, SLEEP, Route

LIMITS = LoadLimits(error_budget_fraction=1.0, error_budget_rows=10**6)
EMPTY = (  # DELETE, not TRUNCATE: on tables this small it takes a fraction of the time
    "DELETE FROM raw.daily_activity; DELETE FROM raw.sleep; DELETE FROM ops.rejected_rows;"
    " DELETE FROM ops.raw_ingest_manifest; DELETE FROM ops.file_loads"
)


@pytest.fixture(scope="module")
def binary_db(pg_admin_url: str) -> Iterator[str]:
    with scratch_database(pg_admin_url, "wp_bin") as url:
        migrate(url)
        yield url


@dataclass
class Loaded:
    """Everything a load left behind that a person or a model could see."""

    outcome: tuple[Any, ...]
    rows: list[tuple[Any, ...]]
    rejected: list[tuple[Any, ...]]
    path: str
    """Which path loaded the rows: ``binary``, or ``text`` (text or checked)."""


class _Spy:
    """Counts the files the binary path loaded (our own function, wrapped)."""

    def __init__(self) -> None:
        self.loaded = 0
        self._real = binary_copy.binary_copy

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self._real(*args, **kwargs)
        self.loaded += 1
        return result


def load(
    url: str,
    lake: Path,
    path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    binary: bool,
    limits: LoadLimits = LIMITS,
) -> Loaded:
    """Load ``path`` into emptied tables, with the binary path taking every file it can (into a
    table of the load's own, whatever its size), or with the text path only."""
    spy = _Spy()
    with monkeypatch.context() as patch:
        patch.setattr(binary_copy, "binary_min_bytes", lambda: 0 if binary else 1 << 62)
        patch.setattr(binary_copy, "OWN_TABLE_MIN_BYTES", 0)
        patch.setattr(binary_copy, "binary_copy", spy)
        with psycopg.connect(url) as conn:
            conn.execute(DROP_OWN_TABLES)
            conn.execute(EMPTY)
            conn.commit()
            done = process_file(conn, inspect_entry(lake, path), run_id=None, limits=limits)
            conn.commit()
            conn.execute("SET DateStyle = 'ISO, MDY'")
            rows: list[tuple[Any, ...]] = []
            for route in (DAILY_ACTIVITY, SLEEP):
                rows += conn.execute(_rows_query(route)).fetchall()
            rejected = conn.execute(
                "SELECT source_path, line_number, raw_line, reason, source_sha256, target_table"
                " FROM ops.rejected_rows ORDER BY source_path, line_number"
            ).fetchall()
            tables = own_tables(conn)
    outcome = (
        done.relative,
        done.outcome,
        done.table,
        done.sha256,
        done.rows_loaded,
        done.rows_rejected,
        done.bytes_read,
        done.reason,
        done.warnings,
    )
    path_taken = "binary" if spy.loaded else "text"
    if path_taken == "binary" and done.outcome == "loaded":
        assert done.table is not None and done.load_id is not None
        assert tables == [(own_table_name(done.table, done.load_id), f"raw.{done.table}")]
    else:  # a load rolled back (a rejected or skipped file, text after all) leaves no table
        assert tables == []
    return Loaded(outcome, rows, rejected, path_taken)


def _rows_query(route: Route) -> sql.Composed:
    columns = [sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in route.columns]
    return sql.SQL("SELECT {}, _line_number, {} FROM {} ORDER BY _line_number").format(
        sql.Literal(route.table), sql.SQL(", ").join(columns), sql.Identifier(*route.qualified_table)
    )


def load_both(
    url: str, lake: Path, path: Path, monkeypatch: pytest.MonkeyPatch, limits: LoadLimits = LIMITS
) -> Loaded:
    """Load ``path`` through both paths; they must agree. Return what the binary run left.

    The binary run puts its rows in a table of the load's own (``load_tables``), whatever the
    file's size, so that every file here tries that too; the rows are read through the raw table,
    as every reader reads them."""
    binary = load(url, lake, path, monkeypatch, binary=True, limits=limits)
    text = load(url, lake, path, monkeypatch, binary=False, limits=limits)
    assert text.path == "text"
    assert binary.outcome == text.outcome
    assert binary.rows == text.rows
    assert binary.rejected == text.rejected
    return binary


DIFFERENTIAL = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
"""The property tests below: each example is a file loaded on both paths."""


def load_both_written(
    content: bytes, name: str, url: str, factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Loaded:
    """``content`` written as ``name`` in a new lake, loaded through both paths (``load_both``)."""
    lake = factory.mktemp("binlake")
    path = lake / name
    path.write_bytes(content)
    return load_both(url, lake, path, monkeypatch)


# -- the bad-input corpus ----------------------------------------------------------------------

CASES = all_cases()


@pytest.fixture(scope="module")
def corpus_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("bincorpus") / "lake"
    build_lake(lake, CASES)
    return lake


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case_same_on_both_paths(
    case: Case, corpus_lake: Path, binary_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = corpus_lake / case.relative()
    loaded = load_both(binary_db, corpus_lake, path, monkeypatch, LoadLimits())
    if path.is_file() and not path.is_symlink() and case.name != "file_name_not_utf8":
        assert loaded.outcome[1] == case.status  # (the pass, not process_file, judges the others)
    good = load_both(binary_db, corpus_lake, corpus_lake / case.good_relative(), monkeypatch)
    assert good.path == "binary"  # the good file beside it is clean: binary it is


# -- random mutations --------------------------------------------------------------------------


@DIFFERENTIAL
@given(content=mutated_file())
def test_mutations_same_on_both_paths(
    content: bytes,
    binary_db: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_both_written(content, "dailyActivity_mutated.csv", binary_db, tmp_path_factory, monkeypatch)


# -- unusual spellings, one column at a time -----------------------------------------------------

SPELLINGS = {
    "id": ["1503960366", "+1503960366", " 1503960366 ", "-1503960366", "9223372036854775808", "", "1e9", "-"],
    "int": ["13", "+13", " 13", "13 ", "-0", "007", "", "2147483648", "1e3", "13.0", "0x1F", "1_000", "NaN"],
    "double": [
        "1.5",
        "+1.5",
        " 1.5 ",
        "1e3",
        "2.5E-2",
        ".5",
        "5.",
        "-0",
        "0.1000000000000000055511151231257827",
        "123456789012345678901234567890",
        "NaN",
        "inf",
        "1e400",
        "1e-400",
        "1,5",
        "",
        ".",
        "-",
        "-.5",
        "1.2.3",
        "1-2",
        "12:00",
        "0." + "0" * 330 + "1",  # too small for a double: zero to a lenient parser
        "0." + "0" * 310 + "1",  # small, but a double (subnormal)
        "9" * 310,  # too large: infinity to a lenient parser
        "9" * 300 + ".5",
    ],
    "date": [
        "4/12/2016",
        "04/02/2016",
        "02/3/2016",
        "2/29/2016",
        " 4/12/2016 ",
        "4/12/2016 12:00:00 AM",
        "4/12/2016 1:30 PM",
        "4/12/2016 23:59",
        "12/31/9999",
        "1/1/1000",
        "2/30/2016",
        "2/29/2015",
        "13/1/2016",
        "4/12/201",
        "4/12/20166",
        "4/12/2016a",
        "2016-04-12",
        "today",
        "",
        "4/12/2016 AM",
        "4/12/2016 25:00",
        "4/12/2016 12:60",
        "4/12/2016 1:30:00 PM",
        "4/12/2016 13:00 PM",
        "4-12-2016",
        "4/12",
        "0/12/2016",
        "4/0/2016",
        "4/12/0999",
        "12:00",
    ],
}
SPELLINGS["int"] += ["-", "1-2", "AM", "1:2", "1/2", ".", " ", "0" * 40 + "13"]
# Past the binary path's shortcut these reach pyarrow's reader itself: whitespace other than a
# space, words a lenient reader takes for numbers, digits of other scripts, bytes of no number.
SPELLINGS["int"] += ["\t13", "13\t", "\v13", "\u0661\u0663", "13\x00", "Infinity"]
SPELLINGS["double"] += [
    "\t1.5",
    "1.5\t",
    "\f1.5",
    "Infinity",
    "-inf",
    "-Infinity",
    "nan",
    "-nan",
    "INF",
    "1.5\u00e9",
    "0x1p3",
    "1.5f",
    "1.5d",
    "1_000.5",
    "\u0661.5",
]
SPELLINGS["date"] += ["\t4/12/2016", "4/12/2016\t", "4/12/2016\x00"]
KINDS = ("id", "date", "int", *("double",) * 7, *("int",) * 5)


ODD_LINES = [
    b"",
    b" ",
    b",,,,,,,,,,,,,,",
    b"\r",
    b"1503960366,4/1/2016\r,13",
    daily_line(0, day=2) + b"\n" + daily_line(1, day=3),  # the other line end, in a CRLF file
    daily_line(0, day=2) + b"\r" + daily_line(1, day=3),  # a CR alone, between two rows
]


def lines_with_odd_cells(
    draw: st.DrawFn, most_lines: int, most_cells: int, odd_cell: Callable[[st.DrawFn, int], str]
) -> list[bytes]:
    """Clean daily-activity lines, up to ``most_cells`` cells of each replaced by
    ``odd_cell(draw, column)``."""
    lines = []
    for i in range(draw(st.integers(1, most_lines))):
        cells = daily_line(i, day=1 + i % 28).decode().split(",")
        for _ in range(draw(st.integers(0, most_cells))):
            at = draw(st.integers(0, len(cells) - 1))
            cells[at] = odd_cell(draw, at)
        lines.append(",".join(cells).encode())
    return lines


def _spelled(draw: st.DrawFn, column: int) -> str:
    spelled = draw(st.sampled_from(SPELLINGS[KINDS[column]]))
    return f'"{spelled}"' if spelled and draw(st.integers(0, 4)) == 0 else spelled


@st.composite
def spelled_file(draw: st.DrawFn) -> bytes:
    """A daily-activity file of clean lines, some with one value in another spelling."""
    lines = lines_with_odd_cells(draw, 30, 2, _spelled)
    if draw(st.integers(0, 5)) == 0:  # a line that is no row, or a stray line end
        odd = draw(st.sampled_from(ODD_LINES))
        lines.insert(draw(st.integers(0, len(lines))), odd)
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + csv_bytes(DAILY_HEADER, lines, eol, final_eol=draw(st.booleans()))


@DIFFERENTIAL
@given(content=spelled_file())
def test_unusual_spellings_same_on_both_paths(
    content: bytes,
    binary_db: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = load_both_written(content, "dailyActivity_spelled.csv", binary_db, tmp_path_factory, monkeypatch)
    with psycopg.connect(binary_db) as conn:  # and what both loaded (the same) is true to the file
        check_loaded_file(conn, content.removeprefix(b"\xef\xbb\xbf"), loaded.outcome[1])


# Values made of the bytes a number or a date is written with, and of those a lenient reader
# might take for one: signs, points, exponents, letters of inf/NaN/AM/PM, whitespace of every
# kind, digits of other scripts, a NUL. Past the shortcut, each reaches pyarrow, whose verdict
# must be the text path's.
HOSTILE = "0123456789+-.,/: eEinfatyINFATYAMPamp\t\v\f\x00\u0661\u0966\u00e9\u200b"


@st.composite
def hostile_file(draw: st.DrawFn) -> bytes:
    """A daily-activity file of clean lines, some cells replaced by a short hostile value."""
    lines = lines_with_odd_cells(draw, 12, 3, lambda draw, _: draw(st.text(alphabet=HOSTILE, max_size=8)))
    return csv_bytes(DAILY_HEADER, lines, draw(st.sampled_from([b"\r\n", b"\n"])))


@DIFFERENTIAL
@given(content=hostile_file())
def test_hostile_values_same_on_both_paths(
    content: bytes,
    binary_db: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_both_written(content, "dailyActivity_hostile.csv", binary_db, tmp_path_factory, monkeypatch)


# -- which path takes what ---------------------------------------------------------------------


def _write(lake: Path, name: str, content: bytes) -> Path:
    path = lake / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_clean_unusual_spellings_load_binary(
    binary_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spellings the gate admits and pyarrow reads as PostgreSQL does stay on the binary path."""
    lines = [
        b'1503960366,"04/02/2016", 13 ,1e3,2.5E-2,.5,5.,-0,"1.5",,007,-0,,1440,1500',
        b"1503960367,2/29/2016 ,13,,,,,,,,,,,,",
        b"1503960368,12/31/9999,999999999,0.100000000000000005551115123125,0,0,0,0,0,0,0,0,0,0,0",
    ]
    path = _write(tmp_path, "dailyActivity_odd.csv", b"\xef\xbb\xbf" + csv_bytes(DAILY_HEADER, lines))
    loaded = load_both(binary_db, tmp_path, path, monkeypatch)
    assert (loaded.path, loaded.outcome[1], loaded.outcome[4]) == ("binary", "loaded", 3)
    assert [r[1] for r in loaded.rows] == [2, 3, 4]
    assert loaded.rows[0][2:5] == ("1503960366", "2016-04-02", "13")


def test_times_of_day_load_binary(binary_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [sleep_line(i) for i in range(20)] + [b"1503960999,4/30/2016 11:59 PM,1,300,330"]
    path = _write(tmp_path, "sleepDay_merged.csv", csv_bytes(SLEEP_HEADER, lines))
    loaded = load_both(binary_db, tmp_path, path, monkeypatch)
    assert (loaded.path, loaded.outcome[4]) == ("binary", 21)
    assert loaded.rows[-1][3] == "2016-04-30"


def test_a_sign_pyarrow_refuses_goes_as_text(
    binary_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL reads ``+13`` as 13; pyarrow refuses it: the text path loads the file."""
    lines = [daily_line(i) for i in range(5)] + [daily_line(9).replace(b",1063,", b",+13,", 1)]
    path = _write(tmp_path, "dailyActivity_sign.csv", csv_bytes(DAILY_HEADER, lines))
    loaded = load_both(binary_db, tmp_path, path, monkeypatch)
    assert (loaded.path, loaded.outcome[1], loaded.outcome[4], loaded.outcome[5]) == ("text", "loaded", 6, 0)


@pytest.mark.parametrize(
    "value",
    ["2/30/2016", "02/30/2016", "2/29/2015", "4/31/2016", "4/12/201"],
)
def test_days_pyarrow_would_invent_are_rejected(
    value: str, binary_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow's strptime reads 2/30/2016 as March 1st: such a line must never reach it."""
    lines = [daily_line(i) for i in range(5)] + [daily_line(7).replace(b"4/1/2016", value.encode(), 1)]
    path = _write(tmp_path, "dailyActivity_day.csv", csv_bytes(DAILY_HEADER, lines))
    loaded = load_both(binary_db, tmp_path, path, monkeypatch)
    assert (loaded.path, loaded.outcome[4], loaded.outcome[5]) == ("text", 5, 1)
    assert loaded.rejected[0][1:3] == (7, lines[-1].decode())
    assert "not a valid date" in loaded.rejected[0][3]


@pytest.mark.parametrize(
    "value",
    ["9" * 310, "-" + "9" * 309 + ".5", "0." + "0" * 330 + "1", "1e400", "1e-400", "-1E-400"],
    ids=[
        "too-large",
        "too-large-negative",
        "too-small",
        "exp-large",
        "exp-small",
        "exp-small-negative",
    ],
)
def test_numbers_a_lenient_parser_would_round_are_rejected(
    value: str, binary_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow reads these as infinity or zero without a word; PostgreSQL refuses them."""
    lines = [daily_line(i) for i in range(5)]
    lines[3] = lines[3].replace(b",0,", f",{value},".encode(), 1)
    path = _write(tmp_path, "dailyActivity_huge.csv", csv_bytes(DAILY_HEADER, lines))
    loaded = load_both(binary_db, tmp_path, path, monkeypatch)
    assert (loaded.path, loaded.outcome[4], loaded.outcome[5]) == ("text", 4, 1)
    assert loaded.rejected[0][1] == 5 and "out of range" in loaded.rejected[0][3]


def test_line_numbers_hold_across_many_batches(
    binary_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(arrow_rows, "ARROW_BLOCK_SIZE", 4096)
    monkeypatch.setattr(binary_copy, "AHEAD", 1)
    lines = [daily_line(i, day=1 + i % 28) for i in range(2000)]
    path = _write(tmp_path, "dailyActivity_long.csv", csv_bytes(DAILY_HEADER, lines, final_eol=False))
    loaded = load_both(binary_db, tmp_path, path, monkeypatch)
    assert loaded.path == "binary"
    assert [r[1] for r in loaded.rows] == list(range(2, 2002))
    assert [r[2] for r in loaded.rows] == [line.split(b",")[0].decode() for line in lines]


def test_a_bad_line_far_into_the_file_rolls_the_binary_copy_back(
    binary_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches already sent are undone; the checked path loads the good rows, rejects the bad."""
    monkeypatch.setattr(arrow_rows, "ARROW_BLOCK_SIZE", 4096)
    lines = [daily_line(i, day=1 + i % 28) for i in range(3000)]
    lines[2500] = lines[2500].replace(b",0,", b",zero,", 1)
    path = _write(tmp_path, "dailyActivity_late.csv", csv_bytes(DAILY_HEADER, lines))
    loaded = load_both(binary_db, tmp_path, path, monkeypatch)
    assert (loaded.path, loaded.outcome[4], loaded.outcome[5]) == ("text", 2999, 1)
    assert loaded.rejected[0][1] == 2502


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_the_size_rule(binary_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm: bool) -> None:
    """Below the threshold the text path, from it on the binary path; the threshold is lower in a
    process that has already loaded pyarrow (``binary_min_bytes``)."""
    monkeypatch.setattr(binary_copy, "BINARY_MIN_BYTES", 20_000)
    monkeypatch.setattr(binary_copy, "WARM_BINARY_MIN_BYTES", 5_000)
    monkeypatch.setattr(binary_copy, "arrow_loaded", lambda: warm)
    tiny = csv_bytes(DAILY_HEADER, [daily_line(i) for i in range(10)])
    medium = csv_bytes(DAILY_HEADER, [daily_line(i) for i in range(50)])
    large = csv_bytes(DAILY_HEADER, [daily_line(i) for i in range(200)])
    assert len(tiny) < 5_000 < len(medium) < 20_000 < len(large)
    cases = {
        "tiny": (tiny, "text"),
        "medium": (medium, "binary" if warm else "text"),
        "large": (large, "binary"),
    }
    for name, (content, expected) in cases.items():
        path = _write(tmp_path, f"dailyActivity_{name}.csv", content)
        spy = _Spy()
        monkeypatch.setattr(binary_copy, "binary_copy", spy)
        with psycopg.connect(binary_db) as conn:
            conn.execute(EMPTY)
            done = process_file(conn, inspect_entry(tmp_path, path), run_id=None, limits=LIMITS)
            conn.commit()
        assert (name, done.outcome, "binary" if spy.loaded else "text") == (name, "loaded", expected)


def test_a_process_is_warm_once_pyarrow_is_loaded() -> None:
    """A new process starts with the high threshold and lowers it once the binary side is imported."""
    probe = (
        "from watcher import binary_copy as b\n"
        "print(b.binary_min_bytes())\n"
        "import watcher.arrow_rows\n"
        "print(b.binary_min_bytes())\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(binary_copy.BINARY_MIN_BYTES), str(binary_copy.WARM_BINARY_MIN_BYTES)]
