"""Bad input driven in-process: files that change while read, budgets, lines the server refuses,
and the checked path loading exactly what the fast path loads."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from tests.bad_inputs import CRLF, _replace_field, csv_bytes, daily_line, daily_lines
from tests.helpers import DAILY_HEADER
from watcher.ingest import FileOutcome, LoadLimits, process_file
from watcher.landing.scanner import inspect_entry
from watcher.routes import DAILY_ACTIVITY, ROUTES, SLEEP
from watcher.sample_data import generate

RAW_VALUES = (
    "id, activity_date, total_steps, total_distance, tracker_distance, logged_activities_distance,"
    " very_active_distance, moderately_active_distance, light_active_distance, sedentary_active_distance,"
    " very_active_minutes, fairly_active_minutes, lightly_active_minutes, sedentary_minutes, calories"
)


@pytest.fixture
def conn(migrated_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_url) as connection:
        yield connection


def load(
    conn: psycopg.Connection[Any],
    lake: Path,
    relative: str,
    *,
    limits: LoadLimits | None = None,
    routes: tuple[Any, ...] = ROUTES,
    progress: Callable[[int], None] | None = None,
) -> FileOutcome:
    candidate = inspect_entry(lake, lake / relative)
    outcome = process_file(
        conn, candidate, run_id=None, limits=limits or LoadLimits(), routes=routes, progress=progress
    )
    conn.commit()
    return outcome


def manifest_row(conn: psycopg.Connection[Any], relative: str) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM ops.raw_ingest_manifest WHERE source_path = %s", (relative,)
        ).fetchone()
    conn.rollback()
    assert row is not None
    return row


def raw_count(conn: psycopg.Connection[Any], relative: str, table: str = "daily_activity") -> int:
    row = conn.execute(
        psycopg.sql.SQL(
            "SELECT count(*) FROM {} JOIN ops.file_loads l ON l.load_id = _load_id WHERE l.source_path = %s"
        ).format(psycopg.sql.Identifier("raw", table)),
        (relative,),
    ).fetchone()
    conn.rollback()
    return int(row[0]) if row else -1


def rejected_rows(conn: psycopg.Connection[Any], relative: str) -> list[tuple[int, str, str]]:
    rows = conn.execute(
        "SELECT line_number, raw_line, reason FROM ops.rejected_rows WHERE source_path = %s ORDER BY 1",
        (relative,),
    ).fetchall()
    conn.rollback()
    return [(int(n), str(raw), str(reason)) for n, raw, reason in rows]


def big_daily(path: Path, rows: int, bad: dict[int, bytes] | None = None) -> Path:
    lines = [daily_line(n, day=1 + n % 28) for n in range(rows)]
    for number, raw in (bad or {}).items():
        lines[number - 2] = raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(csv_bytes(DAILY_HEADER, lines))
    return path


@pytest.mark.parametrize("path_kind", ["fast", "checked"])
def test_a_file_deleted_while_being_read_fails_and_loads_nothing(
    conn: psycopg.Connection[Any], tmp_path: Path, path_kind: str
) -> None:
    bad = {3: _replace_field(daily_line(3), 2, b"x")} if path_kind == "checked" else None
    path = big_daily(tmp_path / "dailyActivity_big.csv", 30_000, bad)

    def delete_it(_count: int) -> None:
        if path.exists():
            path.unlink()

    outcome = load(conn, tmp_path, path.name, progress=delete_it)
    assert outcome.outcome == "failed"
    assert outcome.reason == "the file was deleted while it was being read"
    assert raw_count(conn, path.name) == 0
    assert manifest_row(conn, path.name)["status"] == "failed"
    assert rejected_rows(conn, path.name) == []


@pytest.mark.parametrize("path_kind", ["fast", "checked"])
def test_a_file_truncated_while_being_read_fails_and_loads_nothing(
    conn: psycopg.Connection[Any], tmp_path: Path, path_kind: str
) -> None:
    bad = {3: _replace_field(daily_line(3), 2, b"x")} if path_kind == "checked" else None
    path = big_daily(tmp_path / "dailyActivity_big.csv", 30_000, bad)

    def truncate_it(_count: int) -> None:
        if path.stat().st_size > 100_000:
            os.truncate(path, 100_000)

    outcome = load(conn, tmp_path, path.name, progress=truncate_it)
    assert outcome.outcome == "failed"
    assert "changed while it was being read" in (outcome.reason or "")
    assert raw_count(conn, path.name) == 0
    entry = manifest_row(conn, path.name)
    # recorded as it was before the change, so the next pass sees a change and reads it again
    assert entry["status"] == "failed" and entry["size_bytes"] != path.stat().st_size


def test_the_row_budget_rejects_the_file_and_still_records_its_bad_lines(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    bad = {n: _replace_field(daily_line(n), 2, b"?") for n in (5, 50, 500)}
    path = big_daily(tmp_path / "dailyActivity_x.csv", 1000, bad)
    outcome = load(conn, tmp_path, path.name, limits=LoadLimits(error_budget_rows=2))
    assert outcome.outcome == "rejected"
    assert (outcome.reason or "").startswith("3 bad rows, over the error budget of 2 rows")
    assert raw_count(conn, path.name) == 0
    assert [n for n, _, _ in rejected_rows(conn, path.name)] == [5, 50, 500]
    entry = manifest_row(conn, path.name)
    assert (entry["status"], entry["rows_loaded"], entry["rows_rejected"]) == ("rejected", 0, 3)


def test_a_route_can_set_its_own_budget(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    bad = {n: _replace_field(daily_line(n), 2, b"?") for n in range(2, 12)}  # 10 of 100
    big_daily(tmp_path / "dailyActivity_a.csv", 100, bad)
    big_daily(tmp_path / "sleep_is_not_this.csv", 1)  # not loaded: only to show routes differ
    lenient = dataclasses.replace(DAILY_ACTIVITY, error_budget_fraction=0.2)
    outcome = load(conn, tmp_path, "dailyActivity_a.csv", routes=(lenient, SLEEP))
    assert (outcome.outcome, outcome.rows_loaded, outcome.rows_rejected) == ("loaded", 90, 10)
    strict = dataclasses.replace(DAILY_ACTIVITY, error_budget_fraction=None, error_budget_rows=5)
    (tmp_path / "dailyActivity_b.csv").write_bytes((tmp_path / "dailyActivity_a.csv").read_bytes() + b"\n")
    outcome = load(
        conn,
        tmp_path,
        "dailyActivity_b.csv",
        routes=(strict, SLEEP),
        limits=LoadLimits(error_budget_fraction=0.5),
    )
    assert outcome.outcome == "rejected"
    assert "over the error budget of 5 rows" in (outcome.reason or "")


def test_lines_the_server_refuses_are_recorded_with_its_reason(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A constraint Python does not know, and a number only newer servers read: both streams."""
    conn.execute("ALTER TABLE raw.daily_activity ADD CONSTRAINT steps_sane CHECK (total_steps < 90000)")
    conn.commit()
    bad = {
        700: _replace_field(daily_line(700), 2, b"95000"),  # plain line: main stream, refused
        900: _replace_field(daily_line(900), 2, b'"1_000"'),  # PostgreSQL 16+ reads it
        901: _replace_field(daily_line(901), 2, b'" 12 "'),  # quoted, unusual, good
    }
    path = big_daily(tmp_path / "dailyActivity_x.csv", 3000, bad)
    outcome = load(conn, tmp_path, path.name)
    assert outcome.outcome == "loaded", outcome.reason
    rows = rejected_rows(conn, path.name)
    numbers = [n for n, _, _ in rows]
    assert 700 in numbers
    reasons = dict((n, reason) for n, _, reason in rows)
    assert "steps_sane" in reasons[700]
    assert rows[numbers.index(700)][1] == bad[700].decode()
    if conn.info.server_version < 160000:
        assert "TotalSteps: invalid input syntax for type integer" in reasons[900]
    assert 901 not in numbers
    value = conn.execute(
        "SELECT total_steps FROM raw.daily_activity JOIN ops.file_loads l ON l.load_id = _load_id"
        " WHERE l.source_path = %s AND _line_number = 901",
        (path.name,),
    ).fetchone()
    assert value == (12,)
    loaded = conn.execute(
        "SELECT count(*), count(DISTINCT _line_number) FROM raw.daily_activity"
        " JOIN ops.file_loads l ON l.load_id = _load_id WHERE l.source_path = %s",
        (path.name,),
    ).fetchone()
    assert loaded == (3000 - len(rows), 3000 - len(rows))


def test_the_checked_path_loads_exactly_what_the_fast_path_loads(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The same export, clean (fast COPY) and with one bad line (checked path): same rows, same
    line numbers, for both routes (the sleep file has times of day in its dates)."""
    generate(tmp_path / "clean", users=8, days=40, seed=11)
    for clean in sorted((tmp_path / "clean").rglob("*.csv")):
        relative = clean.relative_to(tmp_path).as_posix()
        lines = clean.read_bytes().split(CRLF)
        lines[5] = lines[5].replace(b",", b";", 1)  # line 6 is bad now
        broken = tmp_path / "broken" / clean.relative_to(tmp_path / "clean")
        broken.parent.mkdir(parents=True, exist_ok=True)
        broken.write_bytes(CRLF.join(lines))
        fast = load(conn, tmp_path, relative)
        slow = load(
            conn,
            tmp_path,
            broken.relative_to(tmp_path).as_posix(),
            limits=LoadLimits(error_budget_fraction=0.5),
        )
        assert fast.outcome == slow.outcome == "loaded"
        assert (fast.rows_rejected, slow.rows_rejected) == (0, 1)
        table = fast.table or ""
        columns = RAW_VALUES if table == "daily_activity" else "id, sleep_day, total_sleep_records,"
        if table == "sleep":
            columns += " total_minutes_asleep, total_time_in_bed"
        query = psycopg.sql.SQL(
            "SELECT _line_number, " + columns + " FROM {} JOIN ops.file_loads l"  # noqa: S608
            " ON l.load_id = _load_id WHERE l.source_path = %s ORDER BY 1"
        ).format(psycopg.sql.Identifier("raw", table))
        fast_rows = conn.execute(query, (relative,)).fetchall()
        slow_rows = conn.execute(query, (broken.relative_to(tmp_path).as_posix(),)).fetchall()
        conn.rollback()
        assert [r for r in fast_rows if r[0] != 6] == slow_rows
        assert len(fast_rows) == fast.rows_loaded > 50


def test_a_stray_quote_costs_its_own_line_only(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    bad = {
        40: _replace_field(daily_line(40), 3, b'"8.5'),  # never closed: would swallow 100 lines
        999: _replace_field(daily_line(999), 3, b'8"5'),  # the last line: closed by nothing
    }
    path = big_daily(tmp_path / "dailyActivity_q.csv", 998, bad)
    outcome = load(conn, tmp_path, path.name)
    assert (outcome.outcome, outcome.rows_loaded, outcome.rows_rejected) == ("loaded", 996, 2)
    assert [(n, r[:30]) for n, _, r in rejected_rows(conn, path.name)] == [
        (40, "a quoted field is never closed"),
        (999, "a quoted field is never closed"),
    ]


def test_a_long_line_after_a_bad_row_still_rejects_the_file(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    lines = daily_lines(1, 50)
    lines[2] = _replace_field(lines[2], 2, b"x")
    lines[30] = b"1," + b"7" * (3 << 20)
    path = tmp_path / "dailyActivity_long.csv"
    path.write_bytes(csv_bytes(DAILY_HEADER, lines))
    outcome = load(conn, tmp_path, path.name)
    assert outcome.outcome == "rejected"
    assert outcome.reason == (
        "line 32 is longer than 1,048,576 bytes; nothing of this file was loaded (is it really a CSV export?)"
    )
    assert raw_count(conn, path.name) == 0


def test_a_copy_of_a_file_with_bad_lines_is_a_duplicate(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = big_daily(tmp_path / "dailyActivity_a.csv", 500, {9: _replace_field(daily_line(9), 2, b"x")})
    (tmp_path / "dailyActivity_copy.csv").write_bytes(path.read_bytes())
    assert load(conn, tmp_path, "dailyActivity_a.csv").outcome == "loaded"
    copy = load(conn, tmp_path, "dailyActivity_copy.csv")
    assert copy.outcome == "duplicate"
    assert raw_count(conn, "dailyActivity_copy.csv") == 0
    assert rejected_rows(conn, "dailyActivity_copy.csv") == []


def test_rejections_reach_the_metrics_and_the_runs_table(migrated_url: str, tmp_path: Path) -> None:
    from tests.helpers import settings_for_tests
    from watcher.landing.scanner import scan
    from watcher.metrics import Metrics
    from watcher.pipeline import Pipeline

    lake = tmp_path / "lake"
    big_daily(lake / "dailyActivity_ok.csv", 300, {9: _replace_field(daily_line(9), 2, b"x")})
    (lake / "dailyActivity_empty.csv").write_bytes(b"")
    registry = CollectorRegistry()
    settings = dataclasses.replace(settings_for_tests(lake, migrated_url), run_dbt=False)
    pipeline = Pipeline(settings, migrated_url, Metrics(registry))
    try:
        result = pipeline.run_pass(list(scan(lake)), "once")
    finally:
        pipeline.close()
    assert result.exit_code == 1
    value = registry.get_sample_value
    assert value("wearable_files_processed_total", {"table": "daily_activity", "outcome": "rejected"}) == 1
    assert value("wearable_files_processed_total", {"table": "daily_activity", "outcome": "loaded"}) == 1
    assert value("wearable_rows_rejected_total", {"table": "daily_activity"}) == 1
    with psycopg.connect(migrated_url) as conn:
        row = conn.execute(
            "SELECT status, files_rejected, rows_rejected, error_summary FROM ops.pipeline_runs"
        ).fetchone()
    assert row is not None
    assert row[:3] == ("partial", 1, 1)
    assert row[3] == "dailyActivity_empty.csv: the file is empty"


def test_the_fast_path_rejects_a_garbled_date(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = big_daily(
        tmp_path / "dailyActivity_d.csv", 200, {9: _replace_field(daily_line(9), 1, b"4/12/20a6")}
    )
    outcome = load(conn, tmp_path, path.name)
    assert [n for n, _, _ in rejected_rows(conn, path.name)] == [9]
    assert outcome.rows_rejected == 1


def test_tiny_blocks_and_segments_keep_every_line_number(
    conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quoted fields over several lines across block and segment ends, lines refused by the server
    in both streams, stray quotes: each row keeps its line number and its values."""
    from tests.integration.test_bad_input_mutations import check_loaded_file
    from watcher import quarantine

    monkeypatch.setattr(quarantine, "BLOCK_SIZE", 211)
    monkeypatch.setattr(quarantine, "SEGMENT_BYTES", 700)
    monkeypatch.setattr(quarantine, "SIDE_SEGMENT_ROWS", 3)
    conn.execute("ALTER TABLE raw.daily_activity ADD CONSTRAINT steps_sane CHECK (total_steps < 90000)")
    conn.commit()
    lines = []
    for n in range(300):
        line = daily_line(n, day=1 + n % 28)
        note = b"plain"
        if n % 17 == 3:
            note = b'"a note\r\nover\nthree lines"'
        if n % 29 == 5:
            line = _replace_field(line, 2, b"95000")  # main stream, refused by the constraint
        if n % 31 == 7:
            line = _replace_field(line, 2, b'"1_000"')  # side stream, refused before PostgreSQL 16
        if n % 37 == 11:
            line = _replace_field(line, 4, b'"8.5')  # a stray quote
        if n % 41 == 13:
            line = _replace_field(line, 2, b"x")  # bad for Python
        lines.append(line + b"," + note)
    content = csv_bytes(DAILY_HEADER + ",Notes", lines)
    path = tmp_path / "dailyActivity_tiny.csv"
    path.write_bytes(content)
    outcome = load(conn, tmp_path, path.name, limits=LoadLimits(error_budget_fraction=0.5))
    assert outcome.outcome == "loaded", outcome.reason
    check_loaded_file(conn, content, "loaded", path.name)
    reasons = {n: r for n, _, r in rejected_rows(conn, path.name)}
    assert any("steps_sane" in r for r in reasons.values())
    assert any("never closed" in r for r in reasons.values())
    assert outcome.rows_loaded + outcome.rows_rejected >= 300  # a stray quote can split a record
    assert outcome.rows_loaded == raw_count(conn, path.name) > 200


@pytest.mark.timeout(30)
def test_a_pipe_that_took_the_place_of_a_file_does_not_block(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The scan saw a file; by the time it is opened a pipe is there (nobody writes to it)."""
    from watcher.landing.zone import Candidate

    pipe = tmp_path / "dailyActivity_pipe.csv"
    os.mkfifo(pipe)
    outcome = process_file(conn, Candidate(pipe, pipe.name), run_id=None, limits=LoadLimits())
    conn.commit()
    assert (outcome.outcome, outcome.reason) == ("rejected", "not a regular file (device, socket or pipe)")
