"""A large load's own table (``watcher.load_tables``): where its rows live, and what happens to it.

Files here are small; the size thresholds are lowered in-process so that they take the binary path
and a table of their own, as files of 32 MiB and more do (the crash test of
``test_crash_recovery`` loads one of that size through the real CLI).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.bad_inputs import csv_bytes, daily_line
from tests.helpers import DAILY_HEADER, own_tables
from watcher import binary_copy
from watcher.ingest import FileOutcome, LoadLimits, process_file
from watcher.landing.scanner import inspect_entry
from watcher.load_tables import attach_own_table, create_own_table, own_table, own_table_name
from watcher.routes import DAILY_ACTIVITY

LIMITS = LoadLimits(error_budget_fraction=0.5)


@pytest.fixture
def large_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every file takes the binary path, into a table of its own."""
    monkeypatch.setattr(binary_copy, "binary_min_bytes", lambda: 0)
    monkeypatch.setattr(binary_copy, "OWN_TABLE_MIN_BYTES", 0)
    yield


def write(lake: Path, name: str, first: int, count: int) -> Path:
    path = lake / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(csv_bytes(DAILY_HEADER, [daily_line(first + n, day=1 + n % 28) for n in range(count)]))
    return path


def load(url: str, lake: Path, path: Path, *, lock_timeout: str = "0") -> FileOutcome:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout,))
        done = process_file(conn, inspect_entry(lake, path), run_id=None, limits=LIMITS)
        conn.commit()
    return done


def counts(url: str) -> tuple[int, int, list[tuple[str, str | None]]]:
    """Rows read through the raw table, rows in the raw table itself, and the own tables."""
    with psycopg.connect(url) as conn:
        through = conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()
        itself = conn.execute("SELECT count(*) FROM ONLY raw.daily_activity").fetchone()
        assert through is not None and itself is not None
        return through[0], itself[0], own_tables(conn)


def own(load_id: int | None) -> tuple[str, str]:
    assert load_id is not None
    return (own_table_name("daily_activity", load_id), "raw.daily_activity")


def test_a_large_load_is_read_through_the_raw_table_and_dropped_when_replaced(
    migrated_url: str, tmp_path: Path, large_files: None
) -> None:
    first = load(migrated_url, tmp_path, write(tmp_path, "dailyActivity_a.csv", 0, 50))
    assert first.outcome == "loaded"
    assert counts(migrated_url) == (50, 0, [own(first.load_id)])

    second = load(migrated_url, tmp_path, write(tmp_path, "dailyActivity_a.csv", 100, 60))
    assert second.outcome == "loaded"
    assert counts(migrated_url) == (60, 0, [own(second.load_id)])  # the first one's table is gone
    with psycopg.connect(migrated_url) as conn:
        replaced = conn.execute(
            "SELECT replaces_load_id FROM ops.file_loads WHERE load_id = %s", (second.load_id,)
        ).fetchone()
        lines = conn.execute(
            "SELECT min(_line_number), max(_line_number), count(DISTINCT _load_id) FROM raw.daily_activity"
        ).fetchone()
    assert replaced == (first.load_id,)
    assert lines == (2, 61, 1)


def test_a_duplicate_or_an_unchanged_large_file_leaves_no_table(
    migrated_url: str, tmp_path: Path, large_files: None
) -> None:
    original = write(tmp_path, "dailyActivity_a.csv", 0, 40)
    first = load(migrated_url, tmp_path, original)
    copy = tmp_path / "again" / "dailyActivity_a.csv"
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())
    assert load(migrated_url, tmp_path, copy).outcome == "duplicate"
    original.touch()  # read again: the same content
    assert load(migrated_url, tmp_path, original).outcome == "skipped"
    assert counts(migrated_url) == (40, 0, [own(first.load_id)])


def test_a_large_file_that_goes_line_by_line_leaves_no_table(
    migrated_url: str, tmp_path: Path, large_files: None
) -> None:
    lines = [daily_line(n, day=1 + n % 28) for n in range(30)]
    lines[17] = lines[17].replace(b",", b",x", 1)  # not a number: the checked path takes the file
    path = tmp_path / "dailyActivity_bad.csv"
    path.write_bytes(csv_bytes(DAILY_HEADER, lines))
    done = load(migrated_url, tmp_path, path)
    assert (done.outcome, done.rows_loaded, done.rows_rejected) == ("loaded", 29, 1)
    assert counts(migrated_url) == (29, 29, [])  # in the raw table itself


def test_a_file_below_the_size_gets_no_table(
    migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "dailyActivity_a.csv", 0, 40)
    monkeypatch.setattr(binary_copy, "binary_min_bytes", lambda: 0)
    monkeypatch.setattr(binary_copy, "OWN_TABLE_MIN_BYTES", path.stat().st_size + 1)
    assert load(migrated_url, tmp_path, path).outcome == "loaded"
    assert counts(migrated_url) == (40, 40, [])


def test_two_large_loads_into_one_table_do_not_wait_for_each_other(
    migrated_url: str, tmp_path: Path, large_files: None
) -> None:
    """A load whose own table is still being filled (not yet attached) holds no lock another load
    into the same raw table waits for; it attaches its table when its rows are in."""
    statement = sql.SQL("COPY {} (_line_number, _load_id, id) FROM STDIN")
    with psycopg.connect(migrated_url) as slow:
        with slow.cursor() as cur:
            target = create_own_table(cur, DAILY_ACTIVITY, 999_999)
            with cur.copy(statement.format(target)) as copy:
                copy.write_row((2, 999_999, 1))
        # meanwhile, another large file: loaded with a lock timeout of 2 s
        other = load(migrated_url, tmp_path, write(tmp_path, "dailyActivity_b.csv", 0, 30), lock_timeout="2s")
        assert other.outcome == "loaded"
        with slow.cursor() as cur:
            attach_own_table(cur, DAILY_ACTIVITY, 999_999)
        slow.commit()
    assert counts(migrated_url) == (31, 0, sorted([own(other.load_id), own(999_999)]))


def test_a_reader_sees_a_large_load_whole_or_not_at_all(
    migrated_url: str, tmp_path: Path, large_files: None
) -> None:
    """Counts read while large files load and replace each other: always a whole version."""
    path = tmp_path / "dailyActivity_a.csv"
    sizes = [20, 45, 70, 35]
    seen: set[int] = set()
    stop = threading.Event()
    problems: list[BaseException] = []

    def read() -> None:
        try:
            with psycopg.connect(migrated_url, autocommit=True) as conn:
                while not stop.is_set():
                    row: Any = conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()
                    seen.add(row[0])
        except BaseException as exc:  # reported below, in the test's thread
            problems.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_, size in enumerate(sizes * 3):
            write(tmp_path, path.name, round_ * 100, size)
            assert load(migrated_url, tmp_path, path).outcome == "loaded"
    finally:
        stop.set()
        reader.join()
    assert not problems
    assert seen <= {0, *sizes}
    assert counts(migrated_url)[1:] == (0, [own(load_id_of(migrated_url, "dailyActivity_a.csv"))])


def load_id_of(url: str, relative: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT load_id FROM ops.raw_ingest_manifest WHERE source_path = %s", (relative,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_grant_on_the_raw_table_covers_reading_a_large_load_through_it(
    migrated_url: str, tmp_path: Path, large_files: None
) -> None:
    """As docs/deploy.md says: a role allowed to read raw.daily_activity reads the rows of a
    load's own table through it, and needs a grant of its own to read that table directly."""
    done = load(migrated_url, tmp_path, write(tmp_path, "dailyActivity_a.csv", 0, 25))
    role = f"wp_reader_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        try:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA raw TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT ON raw.daily_activity TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            row = conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()
            assert row == (25,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(own_table(DAILY_ACTIVITY, done.load_id or 0))
                )
        finally:
            conn.execute("RESET ROLE")
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
