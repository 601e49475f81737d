"""Fault suite, daemons: several instances, SIGKILL during loads, the database stopped for a while.

Marked ``faults`` (``make test-faults`` runs them alone); ``make test`` runs them too.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import psycopg
import pytest

from tests.daemon_helpers import DaemonProcess, drop_daily, wait_until
from tests.helpers import write_big_daily
from tests.integration.test_faults_once import assert_exactly_once
from tests.pg_control import ThrowawayServer

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def loaded_files(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM ops.raw_ingest_manifest WHERE status = 'loaded'").fetchone()
    return int(row[0]) if row else 0


def build_intervals(*logs: str) -> list[tuple[float, float]]:
    """(start, end) wall times of every dbt build found in the JSON log lines given."""
    intervals, open_at = [], {}
    for source, text in enumerate(logs):
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == "dbt_build_started":
                open_at[source] = event["wall_time"]
            elif event.get("event") == "dbt_build_ended" and source in open_at:
                intervals.append((open_at.pop(source), event["wall_time"]))
    return sorted(intervals)


def _answers_healthz(daemon: DaemonProcess) -> bool:
    return daemon.get("/healthz")[0] == 200


def test_two_daemons_and_a_once_run_share_1000_files(tmp_path: Path, migrated_url: str) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    files = 1000
    once_log = tmp_path / "once.log"
    with (
        DaemonProcess(lake, migrated_url, tmp_path / "a.log") as first,
        DaemonProcess(lake, migrated_url, tmp_path / "b.log") as second,
    ):
        for daemon in (first, second):
            wait_until(partial(_answers_healthz, daemon), timeout=60, message="daemon up")
        once: subprocess.Popen[bytes] | None = None
        for part in range(10):
            (lake / f"part{part}").mkdir()
        for i in range(files):
            drop_daily(lake / f"part{i % 10}", f"dailyActivity_{i:04d}.csv", first_id=3000000000 + i)
            if i == files // 2:
                env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_"))}
                env.update(DATABASE_URL=migrated_url, WEARABLE_LOG_FORMAT="json")
                with open(once_log, "wb") as out:
                    once = subprocess.Popen(
                        [sys.executable, "-m", "watcher", "watch", "--once", "--data-dir", str(lake)],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
        wait_until(
            lambda: loaded_files(migrated_url) == files, timeout=240, interval=0.5, message="all files loaded"
        )
        assert once is not None and once.wait(240) in (0, 1)
        # Let the last builds finish before reading the logs.
        wait_until(
            lambda: "dbt_build" not in first.log_tail(1) and "dbt_build" not in second.log_tail(1), timeout=5
        )
        time.sleep(3)
        logs = (first.log_text(), second.log_text(), once_log.read_text())
        assert first.poll() is None and second.poll() is None
    assert_exactly_once(migrated_url, files * 3, files)
    intervals = build_intervals(*logs)
    assert intervals, "no dbt build ran"
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert start >= end - 1e-3, f"two dbt builds overlapped: {intervals}"


def test_sigkill_of_a_daemon_at_twenty_random_moments(tmp_path: Path, migrated_url: str) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    rng = random.Random(7)
    expected_rows = 0
    expected_files = 0
    for round_ in range(20):
        daemon = DaemonProcess(lake, migrated_url, tmp_path / f"d{round_}.log", no_dbt=True).start()
        try:
            for j in range(3):
                drop_daily(
                    lake, f"dailyActivity_{round_:02d}_{j}.csv", days=4, first_id=3100000000 + round_ * 10 + j
                )
            expected_rows += 12
            expected_files += 3
            if round_ % 4 == 0:
                write_big_daily(lake / f"dailyActivity_big_{round_:02d}.csv", 60_000, users=500 + round_)
                expected_rows += 60_000
                expected_files += 1
            time.sleep(rng.uniform(0.5, 3.0))
        finally:
            daemon.signal(signal.SIGKILL)
            daemon.wait_exit(10)
    final = DaemonProcess(lake, migrated_url, tmp_path / "final.log", no_dbt=True).start()
    try:
        wait_until(lambda: final.get("/readyz")[0] == 200, timeout=120, message="final daemon ready")
        wait_until(
            lambda: loaded_files(migrated_url) == expected_files, timeout=120, message="backlog loaded"
        )
    finally:
        assert final.stop() == 0
    assert_exactly_once(migrated_url, expected_rows, expected_files)


def test_database_stopped_while_files_arrive(tmp_path: Path, throwaway_server: ThrowawayServer) -> None:
    from watcher.database import migrate

    url = throwaway_server.url
    migrate(url)
    lake = tmp_path / "lake"
    lake.mkdir()
    daemon = DaemonProcess(
        lake, url, tmp_path / "d.log", no_dbt=True, extra_env={"WEARABLE_RETRY_SECONDS": "3"}
    )
    with daemon:
        wait_until(lambda: daemon.get("/readyz")[0] == 200, timeout=60, message="ready")
        drop_daily(lake, "dailyActivity_before.csv", first_id=3200000000)
        wait_until(lambda: loaded_files(url) == 1, timeout=30, message="first file loaded")
        throwaway_server.stop()
        stopped_at = time.monotonic()
        try:
            for i in range(5):
                drop_daily(lake, f"dailyActivity_during_{i}.csv", first_id=3200000001 + i)
            wait_until(
                lambda: daemon.get("/readyz")[0] == 503, timeout=30, message="/readyz to say not ready"
            )
            # A 30-second outage, well past the daemon's retry window (3 s here).
            time.sleep(max(0.0, 30 - (time.monotonic() - stopped_at)))
            assert daemon.poll() is None, daemon.log_tail()
            assert daemon.get("/healthz")[0] == 200
        finally:
            throwaway_server.start()
        wait_until(
            lambda: loaded_files(url) == 6, timeout=90, interval=0.5, message="files dropped meanwhile loaded"
        )
        wait_until(lambda: daemon.get("/readyz")[0] == 200, timeout=30, message="ready again")
    assert_exactly_once(url, 18, 6)
