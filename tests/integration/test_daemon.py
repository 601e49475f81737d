"""The daemon as a process against a real PostgreSQL: drops, slow writers, bursts, SIGTERM, polling.

No timing is asserted here (machines are noisy); every wait is bounded. Speed is measured by
``bench/daemon_latency.py``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import (
    DaemonProcess,
    daily_rows_loaded,
    dbt_available,
    drop_daily,
    finished_runs,
    manifest_status,
    metric_sum,
    scalar,
    wait_until,
    write_daily,
)
from tests.helpers import DAILY_HEADER, daily_rows, write_big_daily

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    path = tmp_path / "lake"
    path.mkdir()
    return path


def test_a_drop_becomes_rows_a_run_and_metrics(lake: Path, tmp_path: Path, migrated_url: str) -> None:
    """The real dbt build runs; the metrics change, scraped over HTTP and parsed by prometheus-client."""
    daemon = DaemonProcess(lake, migrated_url, tmp_path / "daemon.log")
    try:
        daemon.start().wait_ready()
        before = daemon.metrics()
        assert metric_sum(before, "wearable_watcher_backend", backend="inotify") == 1
        assert metric_sum(before, "wearable_files_processed_total") == 0
        assert metric_sum(before, "process_cpu_seconds_total") > 0  # process metrics are there
        assert daemon.get("/healthz")[0] == 200

        drop_daily(lake, "dailyActivity_drop.csv", users=2, days=5)
        wait_until(lambda: daily_rows_loaded(migrated_url) == 10, timeout=30, message="10 rows")
        runs = wait_until(
            lambda: [r for r in finished_runs(migrated_url) if r["files_loaded"] == 1],
            timeout=60,
            message="a finished run",
        )
        assert runs[0]["trigger"] == "event"
        assert runs[0]["rows_loaded"] == 10

        after = wait_until(
            lambda: (
                m
                if (m := daemon.metrics()) and metric_sum(m, "wearable_runs_total", trigger="event") >= 1
                else None
            ),
            timeout=30,
            message="the run in /metrics",
        )
        files = "wearable_files_processed_total"
        assert metric_sum(after, files, table="daily_activity", outcome="loaded") == 1
        assert metric_sum(after, "wearable_rows_loaded_total", table="daily_activity") == 10
        assert metric_sum(after, "wearable_load_duration_seconds_count", table="daily_activity") == 1
        assert metric_sum(after, "wearable_last_successful_load_timestamp_seconds") > 0
        assert metric_sum(after, "wearable_files_pending") == 0
        assert metric_sum(after, "wearable_database_up") == 1
        for name in after:
            assert "dailyActivity_drop" not in repr(name), "a file name leaked into a label"
        if dbt_available():
            assert runs[0]["dbt_status"] == "success", runs[0]
            assert metric_sum(after, "wearable_dbt_builds_total", status="success") == 1
            assert metric_sum(after, "wearable_drop_to_ready_seconds_count") == 1
            assert metric_sum(after, "wearable_last_successful_build_timestamp_seconds") > 0
            assert daemon.get("/readyz")[0] == 200

        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(15) == 0
    finally:
        daemon.stop()


def test_backlog_is_loaded_at_start_and_idle_makes_no_runs(
    lake: Path, tmp_path: Path, migrated_url: str
) -> None:
    for i in range(3):
        write_daily(lake / "2016" / f"dailyActivity_{i}.csv", first_id=1503960366 + i)
    (lake / ".hidden.csv").write_text("not data")
    (lake / "draft.csv.part").write_text("not data")
    daemon = DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True)
    try:
        daemon.start().wait_ready()
        wait_until(lambda: daily_rows_loaded(migrated_url) == 9, timeout=30, message="the backlog")
        runs = finished_runs(migrated_url)
        assert [(r["trigger"], r["files_loaded"]) for r in runs] == [("startup", 3)]
        assert set(manifest_status(migrated_url)) == {f"2016/dailyActivity_{i}.csv" for i in range(3)}
        # a file that was already loaded, touched again without change, starts no run
        os.utime(lake / "2016" / "dailyActivity_0.csv")
        drop_daily(lake, "dailyActivity_new.csv", first_id=1624580081)
        wait_until(lambda: daily_rows_loaded(migrated_url) == 12, timeout=30, message="the new drop")
        wait_until(lambda: len(finished_runs(migrated_url)) == 2, timeout=30, message="the event run")
        assert finished_runs(migrated_url)[-1]["trigger"] == "event"
    finally:
        assert daemon.stop() == 0


def test_a_slow_writer_is_loaded_once_after_its_last_write(
    lake: Path, tmp_path: Path, migrated_url: str
) -> None:
    """Pauses longer than the debounce window: only the close after the last write lets it in."""
    daemon = DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True, debounce=0.3)
    rows = daily_rows(40, 50)  # 2,000 rows, written in 8 pieces
    try:
        daemon.start().wait_ready()
        path = lake / "dailyActivity_slow.csv"
        with open(path, "wb") as out:
            out.write((DAILY_HEADER + "\r\n").encode())
            for i in range(0, len(rows), 250):
                out.write(("\r\n".join(rows[i : i + 250]) + "\r\n").encode())
                out.flush()
                os.fsync(out.fileno())
                time.sleep(0.6)
                assert daily_rows_loaded(migrated_url) == 0, "a part of the file was loaded"
        wait_until(lambda: daily_rows_loaded(migrated_url) == 2000, timeout=30, message="2,000 rows")
        loads = scalar(
            migrated_url, "SELECT count(*) FROM ops.file_loads WHERE source_path = 'dailyActivity_slow.csv'"
        )
        assert loads == 1
        assert manifest_status(migrated_url) == {"dailyActivity_slow.csv": "loaded"}
        assert daemon.metric("wearable_files_processed_total") == 1
    finally:
        daemon.stop()


def test_a_writer_that_closes_and_reopens_at_once_is_loaded_once_whole(
    lake: Path, tmp_path: Path, migrated_url: str
) -> None:
    """A close is evidence, confirmed over a short window: a writer that closes, waits 300 ms,
    reopens and appends falls within it, and the file is loaded once, with every row."""
    daemon = DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True)
    rows = daily_rows(10, 20)  # 200 rows: half before the close, half after the reopen
    try:
        daemon.start().wait_ready()
        path = lake / "dailyActivity_reopened.csv"
        with open(path, "wb") as out:
            out.write((DAILY_HEADER + "\r\n" + "\r\n".join(rows[:100]) + "\r\n").encode())
        time.sleep(0.3)
        with open(path, "ab") as out:
            out.write(("\r\n".join(rows[100:]) + "\r\n").encode())
        wait_until(lambda: daily_rows_loaded(migrated_url) == 200, timeout=30, message="200 rows")
        time.sleep(1.5)  # a second version, had the first half been taken, would be loaded by now
        loads = scalar(
            migrated_url,
            "SELECT count(*) FROM ops.file_loads WHERE source_path = 'dailyActivity_reopened.csv'",
        )
        assert loads == 1
        assert manifest_status(migrated_url) == {"dailyActivity_reopened.csv": "loaded"}
        assert daemon.metric("wearable_files_processed_total") == 1
    finally:
        daemon.stop()


@pytest.mark.slow
@pytest.mark.skipif(not dbt_available(), reason="no dbt project")
def test_drop_to_ready_counts_from_the_first_sight_of_the_file(
    lake: Path, tmp_path: Path, migrated_url: str
) -> None:
    """The user waits from the first write: a writer that keeps the file open for 4 s shows in
    ``wearable_drop_to_ready_seconds`` with those 4 s; settled-to-ready has its own histogram."""
    daemon = DaemonProcess(lake, migrated_url, tmp_path / "daemon.log")
    held = 4.0
    try:
        daemon.start().wait_ready()
        path = lake / "dailyActivity_held.csv"
        rows = daily_rows(2, 5)
        with open(path, "wb") as out:
            out.write((DAILY_HEADER + "\r\n" + "\r\n".join(rows) + "\r\n").encode())
            out.flush()
            time.sleep(held)  # written, still open: not settled, but the user is waiting
        after = wait_until(
            lambda: (
                m
                if (m := daemon.metrics()) and metric_sum(m, "wearable_drop_to_ready_seconds_count")
                else None
            ),
            timeout=60,
            message="the drop built",
        )
        assert metric_sum(after, "wearable_drop_to_ready_seconds_count") == 1
        assert metric_sum(after, "wearable_settled_to_ready_seconds_count") == 1
        from_sight = metric_sum(after, "wearable_drop_to_ready_seconds_sum")
        from_settled = metric_sum(after, "wearable_settled_to_ready_seconds_sum")
        assert from_sight >= held
        assert from_sight - from_settled >= held  # it settled only after the close
    finally:
        daemon.stop()


@pytest.mark.slow
def test_a_burst_of_200_files_loads_all_with_few_builds(
    lake: Path, tmp_path: Path, migrated_url: str
) -> None:
    daemon = DaemonProcess(lake, migrated_url, tmp_path / "daemon.log")
    try:
        daemon.start().wait_ready(timeout=90)
        for i in range(200):
            write_daily(lake / "burst" / f"dailyActivity_{i:03}.csv", days=2, first_id=2000000000 + i)
        wait_until(
            lambda: sum(s == "loaded" for s in manifest_status(migrated_url).values()) == 200,
            timeout=90,
            message="200 files loaded",
        )
        assert daily_rows_loaded(migrated_url) == 400
        runs = wait_until(
            lambda: (r := finished_runs(migrated_url)) and sum(x["files_loaded"] for x in r) == 200 and r,
            timeout=60,
            message="the runs to finish",
        )
        builds_in_runs = sum(1 for r in runs if r["dbt_status"] is not None)
        builds = daemon.metric("wearable_dbt_builds_total")
        assert builds == builds_in_runs
        assert builds <= 3, runs
        if dbt_available():
            assert builds >= 1
            assert all(r["dbt_status"] == "success" for r in runs if r["dbt_status"]), runs
        assert daemon.metric("wearable_files_processed_total", outcome="loaded") == 200
    finally:
        daemon.stop()


def test_sigterm_during_a_large_load_rolls_it_back_and_the_restart_loads_it(
    lake: Path, tmp_path: Path, migrated_url: str
) -> None:
    rows = 600_000
    staging = tmp_path / "staging"
    big = write_big_daily(staging / "dailyActivity_big.csv", rows)
    daemon = DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True, debounce=0.2)
    try:
        daemon.start().wait_ready()
        os.replace(big, lake / big.name)
        dbname = scalar(migrated_url, "SELECT current_database()")
        wait_until(
            lambda: scalar(
                migrated_url,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND state = 'active' AND query ILIKE 'COPY%%'",
                (dbname,),
            ),
            timeout=30,
            interval=0.02,
            message="the COPY to start",
        )
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(10) == 0
    finally:
        daemon.stop()
    loaded = daily_rows_loaded(migrated_url)
    status = manifest_status(migrated_url).get("dailyActivity_big.csv")
    assert (loaded, status) in {(0, None), (rows, "loaded")}, "partial rows after SIGTERM"
    assert "shutdown_requested" in daemon.log_text()

    again = DaemonProcess(lake, migrated_url, tmp_path / "daemon2.log", no_dbt=True)
    try:
        again.start()
        wait_until(lambda: daily_rows_loaded(migrated_url) == rows, timeout=90, message="the reload")
        assert manifest_status(migrated_url) == {"dailyActivity_big.csv": "loaded"}
        assert scalar(migrated_url, "SELECT count(*) FROM ops.file_loads") == 1
    finally:
        again.stop()


def test_forced_polling_still_loads_a_drop(lake: Path, tmp_path: Path, migrated_url: str) -> None:
    daemon = DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True, polling=True)
    try:
        daemon.start().wait_ready()
        assert daemon.metric("wearable_watcher_backend", backend="polling") == 1
        assert daemon.metric("wearable_watcher_backend", backend="inotify") == 0
        write_daily(lake / "dailyActivity_polled.csv", days=4)  # written in place, no rename
        wait_until(lambda: daily_rows_loaded(migrated_url) == 4, timeout=30, message="4 rows")
        assert [r["trigger"] for r in finished_runs(migrated_url)] == ["event"]
    finally:
        daemon.stop()
