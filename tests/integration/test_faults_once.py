"""Fault suite, one-shot runs: several processes at once, and SIGKILL at random moments."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import psycopg
import pytest

from tests.helpers import (
    DAILY_HEADER,
    daily_rows,
    finish_or_dump,
    once_json,
    own_tables,
    start_once,
    wait_for_copy,
    write_big_daily,
    write_csv,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def make_lake(root: Path, files: int, rows_per_file: int = 3) -> int:
    for i in range(files):
        rows = daily_rows(1, rows_per_file, first_id=2000000000 + i)
        write_csv(root / f"batch{i % 7}" / f"dailyActivity_{i:04d}.csv", DAILY_HEADER, rows)
    return files * rows_per_file


def assert_exactly_once(url: str, expected_rows: int, expected_files: int) -> None:
    with psycopg.connect(url) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (l.source_path, _line_number)) FROM raw.daily_activity"
            " JOIN ops.file_loads l ON l.load_id = _load_id"
        ).fetchone()  # type: ignore[misc]
        loaded = conn.execute(
            "SELECT count(*), coalesce(sum(rows_loaded), 0) FROM ops.raw_ingest_manifest WHERE status = 'loaded'"
        ).fetchone()
        orphans = conn.execute(
            "SELECT count(*) FROM raw.daily_activity d WHERE NOT EXISTS"
            " (SELECT 1 FROM ops.raw_ingest_manifest m WHERE m.load_id = d._load_id)"
        ).fetchone()
    assert total == distinct == expected_rows
    assert loaded == (expected_files, expected_rows)
    assert orphans == (0,)


def test_three_concurrent_once_runs_load_each_file_once(tmp_path: Path, migrated_url: str) -> None:
    lake = tmp_path / "lake"
    rows = make_lake(lake, 300)
    procs = [start_once(lake, migrated_url) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
    assert_exactly_once(migrated_url, rows, 300)


def test_sigkill_at_twenty_random_moments(tmp_path: Path, migrated_url: str) -> None:
    lake = tmp_path / "lake"
    rows = make_lake(lake, 40)
    write_big_daily(lake / "big" / "dailyActivity_big_a.csv", 150_000)
    write_big_daily(lake / "big" / "dailyActivity_big_b.csv", 150_000, users=700)
    rows += 300_000
    rng = random.Random(20161)
    for _ in range(20):
        proc = start_once(lake, migrated_url)
        time.sleep(rng.uniform(0.3, 2.5))
        proc.send_signal(signal.SIGKILL)
        finish_or_dump(proc, 30)
    code, result = once_json(lake, migrated_url, "--no-dbt")
    assert code == 0, result
    assert_exactly_once(migrated_url, rows, 42)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_one_shot_pass_stopped_by_a_signal_is_recorded_as_interrupted(
    tmp_path: Path, migrated_url: str, signum: signal.Signals
) -> None:
    lake = tmp_path / "lake"
    write_big_daily(lake / "dailyActivity_big.csv", 600_000)
    proc = start_once(lake, migrated_url)
    # While the file's COPY runs: a fixed pause after the run row could land after the commit
    # on a fast machine (the file loads in about half a second).
    wait_for_copy(migrated_url, proc)
    proc.send_signal(signum)
    finish_or_dump(proc, 30)
    assert proc.returncode == 130
    with psycopg.connect(migrated_url) as conn:
        run = conn.execute(
            "SELECT trigger, status, finished_at IS NOT NULL FROM ops.pipeline_runs"
        ).fetchall()
        rows = conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()
        tables = own_tables(conn)
    assert run == [("once", "interrupted", True)]
    assert rows == (0,)  # the file in flight rolled back
    assert tables == []  # and the table of its own with it
