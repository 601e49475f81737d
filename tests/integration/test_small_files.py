"""Small files in groups: one transaction and one COPY for many files, one answer per file.

A bad file in a group (rejected for its header, with no rows, not a regular file, gone, refused
by the server, for the checked path) gets its own answer and the others load; loads into one
table from two connections no longer wait for each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import DAILY_HEADER, daily_rows, settings_for_tests, write_csv
from watcher import pipeline as pipeline_module
from watcher.ingest import LoadLimits, process_file
from watcher.landing.scanner import inspect_entry, scan
from watcher.landing.zone import Candidate
from watcher.metrics import Metrics
from watcher.pipeline import Pipeline
from watcher.small_files import load_group


@pytest.fixture
def conn(migrated_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_url) as connection:
        yield connection


def user_file(lake: Path, name: str, user: int, days: int = 7) -> Path:
    return write_csv(lake / name, DAILY_HEADER, daily_rows(1, days, first_id=user))


def statuses(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, str | None, int]]:
    rows = conn.execute(
        "SELECT source_path, status, error_reason, rows_loaded FROM ops.raw_ingest_manifest"
    ).fetchall()
    conn.rollback()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def rows_by_path(conn: psycopg.Connection[Any]) -> dict[str, list[int]]:
    """Each loaded path's line numbers, in order (its rows, with their lineage)."""
    rows = conn.execute(
        "SELECT l.source_path, r._line_number FROM raw.daily_activity AS r"
        " JOIN ops.file_loads AS l ON l.load_id = r._load_id ORDER BY 1, 2"
    ).fetchall()
    conn.rollback()
    found: dict[str, list[int]] = {}
    for path, line in rows:
        found.setdefault(path, []).append(line)
    return found


def test_a_bad_file_in_a_group_has_its_own_answer_and_the_others_load(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    good = [user_file(lake, f"dailyActivity_{i:02}.csv", 3000000000 + i) for i in range(6)]
    write_csv(lake / "dailyActivity_03b.csv", "Foo;Bar", ["1;2"])  # no column of the table
    write_csv(lake / "dailyActivity_03c.csv", DAILY_HEADER, [])  # a header, no rows
    (lake / "dailyActivity_03d.csv").write_bytes((lake / "dailyActivity_01.csv").read_bytes())  # a copy
    conn.execute("ALTER TABLE raw.daily_activity ADD CONSTRAINT steps_sane CHECK (total_steps < 90000)")
    conn.commit()
    refused = daily_rows(1, 200, first_id=3100000000)
    refused[1] = refused[1].replace(",1011,", ",95000,", 1)  # a plain line the server refuses
    write_csv(lake / "dailyActivity_03e.csv", DAILY_HEADER, refused)
    checked = daily_rows(1, 200, first_id=3200000000)
    checked[2] = checked[2].replace(",1022,", ",n/a,", 1)  # not a number: the checked path
    write_csv(lake / "dailyActivity_03f.csv", DAILY_HEADER, checked)
    os.mkfifo(lake / "dailyActivity_03g.csv")
    candidates = [inspect_entry(lake, p) for p in sorted(lake.iterdir()) if p.name != "dailyActivity_03g.csv"]
    candidates.insert(4, Candidate(lake / "dailyActivity_03g.csv", "dailyActivity_03g.csv"))
    candidates.insert(5, Candidate(lake / "dailyActivity_03h.csv", "dailyActivity_03h.csv"))  # gone

    grouped = load_group(conn, candidates, run_id=None, limits=LoadLimits())

    answers = {o.relative: (o.outcome, o.reason) for o in grouped.outcomes}
    assert {p.name: answers[p.name][0] for p in good} == {p.name: "loaded" for p in good}
    assert answers["dailyActivity_03b.csv"][0] == "rejected"
    assert "names none of the columns" in (answers["dailyActivity_03b.csv"][1] or "")
    assert answers["dailyActivity_03c.csv"] == ("rejected", "the file has a header but no rows")
    assert answers["dailyActivity_03d.csv"] == (
        "duplicate",
        "same content as dailyActivity_01.csv, which is already loaded",
    )
    assert answers["dailyActivity_03g.csv"] == ("rejected", "not a regular file (device, socket or pipe)")
    assert answers["dailyActivity_03h.csv"] == ("failed", "the file disappeared before it could be read")
    # refused by the server in the group's COPY, or for the checked path: loaded alone, after it
    assert sorted(c.relative for c in grouped.alone) == ["dailyActivity_03e.csv", "dailyActivity_03f.csv"]
    assert not grouped.later
    recorded = statuses(conn)
    assert {path: recorded[path][0] for path in answers} == {path: a[0] for path, a in answers.items()}
    assert rows_by_path(conn) == {p.name: list(range(2, 9)) for p in good}

    # The whole pass: the two handed back get their own answers through the one-file path.
    pipeline = Pipeline(settings_for_tests(lake, conn.info.dsn), conn.info.dsn, Metrics(CollectorRegistry()))
    try:
        result = pipeline.run_pass(pipeline.pending(scan(lake)), "once")
    finally:
        pipeline.close()
    after = {o.relative: o.outcome for o in result.outcomes}
    assert after["dailyActivity_03e.csv"] == "loaded"  # its good lines; the bad one recorded
    assert after["dailyActivity_03f.csv"] == "loaded"
    assert statuses(conn)["dailyActivity_03e.csv"][2] == 199
    assert rows_by_path(conn)["dailyActivity_03e.csv"] == [n for n in range(2, 202) if n != 3]
    assert rows_by_path(conn)["dailyActivity_03f.csv"] == [n for n in range(2, 202) if n != 4]


def test_a_pass_of_many_small_files_loads_each_once_in_groups(
    migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "GROUP_FILES", 8)
    lake = tmp_path / "lake"
    count = 20  # three groups
    for i in range(count):
        user_file(lake, f"u/dailyActivity_{i:04}.csv", 3300000000 + i, days=2)
    settings = settings_for_tests(lake, migrated_url)
    pipeline = Pipeline(settings, migrated_url, Metrics(CollectorRegistry()))
    try:
        first = pipeline.run_pass(pipeline.pending(scan(lake)), "once")
        second = pipeline.run_pass(list(scan(lake)), "once")
    finally:
        pipeline.close()
    assert first.count("loaded") == count and first.rows_loaded == 2 * count
    assert second.count("skipped") == count
    with psycopg.connect(migrated_url) as conn:
        loads = conn.execute("SELECT count(*), count(DISTINCT load_id) FROM ops.file_loads").fetchone()
        assert loads == (count, count)
        by_path = rows_by_path(conn)
    assert len(by_path) == count and all(lines == [2, 3] for lines in by_path.values())


def test_a_stop_during_a_group_rolls_back_the_group(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    for i in range(5):
        user_file(lake, f"dailyActivity_{i}.csv", 3400000000 + i)
    seen = []

    def stop_at_the_fourth(_count: int) -> None:
        seen.append(1)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_group(conn, list(scan(lake)), run_id=None, limits=LoadLimits(), progress=stop_at_the_fourth)
    conn.rollback()
    assert statuses(conn) == {} and rows_by_path(conn) == {}


def begin(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT 1")  # a transaction is open: what is loaded in it stays uncommitted


@pytest.mark.parametrize("kind", ["clean", "checked", "group"])
def test_two_connections_load_into_one_table_without_waiting_for_each_other(
    migrated_url: str, tmp_path: Path, kind: str
) -> None:
    """Each inside a load transaction on raw.daily_activity; the second must not wait for the first
    (it would have waited for the table's line sequence): a lock wait ends in a lock timeout."""
    lake = tmp_path / "lake"
    lines = daily_rows(1, 4, first_id=3500000000)
    other = daily_rows(1, 4, first_id=3600000000)
    if kind == "checked":
        lines[1] = lines[1].replace("4/13/2016", "4/13/20a6")
        other[1] = other[1].replace("4/13/2016", "4/13/20a6")
    first = inspect_entry(lake, write_csv(lake / "dailyActivity_a.csv", DAILY_HEADER, lines))
    second = inspect_entry(lake, write_csv(lake / "dailyActivity_b.csv", DAILY_HEADER, other))
    with psycopg.connect(migrated_url) as one, psycopg.connect(migrated_url) as two:
        two.execute("SET lock_timeout = '300ms'")
        two.commit()
        for conn, candidate in ((one, first), (two, second)):
            begin(conn)
            if kind == "group":
                grouped = load_group(conn, [candidate], run_id=None, limits=LoadLimits())
                assert [o.outcome for o in grouped.outcomes] == ["loaded"]
            else:
                lenient = LoadLimits(error_budget_fraction=0.5)  # one bad line of four
                outcome = process_file(conn, candidate, run_id=None, limits=lenient)
                assert outcome.outcome == "loaded", outcome.reason
        two.commit()
        one.commit()
        expected = [2, 4, 5] if kind == "checked" else [2, 3, 4, 5]
        assert rows_by_path(one) == {"dailyActivity_a.csv": expected, "dailyActivity_b.csv": expected}
