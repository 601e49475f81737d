"""A file that cannot be read is tried again when it changes, on `reprocess`, or on a back-off that
doubles from the reconcile interval, never at every backstop scan: an idle daemon writes no runs.

The tests run as root, which reads a ``chmod 000`` file anyway: the daemon is then started as
another user (``setpriv``), so that the read really fails.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg.conninfo import conninfo_to_dict

from tests.daemon_helpers import (
    DaemonProcess,
    finished_runs,
    manifest_status,
    scalar,
    wait_until,
    write_daily,
)
from tests.helpers import settings_for_tests
from watcher import manifest
from watcher.landing.scanner import inspect_entry, scan
from watcher.metrics import Metrics
from watcher.pipeline import Pipeline

LOCKED = "dailyActivity_locked.csv"


def unprivileged(args: list[str], database_url: str) -> list[str]:
    """The command as a process that file modes apply to.

    As root, the daemon runs as another user (``setpriv``): the owner of the server's socket
    folder when the database is reached over a Unix socket (the embedded server's user), else
    ``nobody``. Dropping root's capabilities instead would also lock it out of that socket.
    """
    if os.geteuid() != 0:
        return args
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: a chmod 000 file stays readable")
    host = str(conninfo_to_dict(database_url).get("host") or "")
    user = pwd.getpwuid(os.stat(host).st_uid) if host.startswith("/") else pwd.getpwnam("nobody")
    if user.pw_uid == 0:
        pytest.skip("the database socket belongs to root: the daemon cannot run as another user")
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *args]


def failed_runs(url: str) -> int:
    row = scalar(url, "SELECT count(*) FROM ops.pipeline_runs WHERE files_failed > 0")
    return int(row)


def test_retry_delay_doubles_from_the_reconcile_interval_up_to_an_hour() -> None:
    from watcher.ingest import retry_delay

    assert [retry_delay(n, 60) for n in range(8)] == [0, 60, 120, 240, 480, 960, 1920, 3600]
    assert retry_delay(10_000, 60) == 3600
    assert retry_delay(1, 0) == 60  # no backstop scan: the default interval
    assert retry_delay(2, 7200) == 7200  # an interval above an hour is the floor


def test_a_failed_file_waits_for_a_change_or_its_back_off(migrated_url: str, tmp_path: Path) -> None:
    from watcher.ingest import retry_due

    lake = tmp_path / "lake"
    path = write_daily(lake / LOCKED)
    info = os.stat(path)
    with psycopg.connect(migrated_url) as conn, conn.cursor() as cur:
        for _ in range(3):  # three failures in a row: 60 s, 120 s, now 240 s
            manifest.upsert_entry(
                cur,
                manifest.EntryUpdate(
                    LOCKED,
                    "failed",
                    size_bytes=info.st_size,
                    mtime_ns=info.st_mtime_ns,
                    file_mode=info.st_mode,
                    error_reason="the file cannot be read: permission denied",
                ),
            )
    pipeline = Pipeline(settings_for_tests(lake, migrated_url), migrated_url, Metrics(CollectorRegistry()))
    try:
        assert pipeline.pending(scan(lake)) == []  # unchanged, back-off running
        entry = pipeline.manifest_snapshot()[LOCKED]
        assert entry.failed_attempts == 3
        assert entry.updated_at is not None
        later = entry.updated_at + timedelta(seconds=241)
        version = inspect_entry(lake, path).stat()  # what the landing zone tells of the file
        assert retry_due(entry, version, later, 60) and not retry_due(
            entry, version, later - timedelta(seconds=2), 60
        )

        os.chmod(path, 0o644 if info.st_mode & 0o777 != 0o644 else 0o600)  # the mode changed
        assert [c.relative for c in pipeline.pending(scan(lake))] == [LOCKED]
        os.chmod(path, info.st_mode)
        assert pipeline.pending(scan(lake)) == []
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1))  # touched
        assert [c.relative for c in pipeline.pending(scan(lake))] == [LOCKED]

        # a file that had vanished when it failed (mode 0) is read as soon as one is there again;
        # a failure with nothing recorded (a database error on the file) waits for its back-off
        with psycopg.connect(migrated_url) as conn, conn.cursor() as cur:
            for name, mode in (("dailyActivity_back.csv", 0), ("dailyActivity_dberror.csv", None)):
                write_daily(lake / name)
                manifest.upsert_entry(
                    cur, manifest.EntryUpdate(name, "failed", file_mode=mode, error_reason="...")
                )
        assert [c.relative for c in pipeline.pending(scan(lake))] == [
            "dailyActivity_back.csv",
            LOCKED,
        ]
        (lake / "dailyActivity_back.csv").unlink()
        (lake / "dailyActivity_dberror.csv").unlink()

        # reprocess (force) reads it at once; a load sets the count back to 0
        candidates = list(scan(lake))
        result = pipeline.run_pass(candidates, "reprocess", force=True)
        assert result.count("loaded") == 1
        assert pipeline.manifest_snapshot()[LOCKED].failed_attempts == 0
    finally:
        pipeline.close()


@pytest.mark.slow
def test_an_unreadable_file_backs_off_and_loads_once_readable(migrated_url: str, tmp_path: Path) -> None:
    lake = Path(tempfile.mkdtemp(prefix="lake-"))  # a folder the daemon's user can enter
    lake.chmod(0o755)
    locked = write_daily(lake / LOCKED)
    locked.chmod(0o000)
    interval = 0.5
    daemon = DaemonProcess(
        lake,
        migrated_url,
        tmp_path / "daemon.log",
        no_dbt=True,
        extra_args=["--reconcile-interval", str(interval)],
    )
    daemon.args = unprivileged(daemon.args, migrated_url)
    try:
        daemon.start().wait_ready()
        wait_until(
            lambda: manifest_status(migrated_url).get(LOCKED) == "failed", timeout=60, message="the failure"
        )
        first_failure = time.monotonic()
        wait_until(lambda: failed_runs(migrated_url) >= 2, timeout=60, message="a retry after the back-off")
        time.sleep(16 * interval)  # watch 16 more backstop scans
        elapsed = time.monotonic() - first_failure
        # one retry per doubling (after 0.5, 1, 2, 4, 8 s...), where a retry per scan made 1 a scan
        allowed = 2 + int(elapsed / interval).bit_length()
        runs = failed_runs(migrated_url)
        assert runs <= allowed, (runs, allowed, daemon.log_tail())
        assert all(r["files_loaded"] == 0 for r in finished_runs(migrated_url))
        with psycopg.connect(migrated_url) as conn:
            row: Any = conn.execute(
                "SELECT failed_attempts, file_mode, error_reason FROM ops.raw_ingest_manifest"
                " WHERE source_path = %s",
                (LOCKED,),
            ).fetchone()
        assert runs <= row[0] <= allowed and row[1] & 0o777 == 0
        assert "permission denied" in row[2]

        locked.chmod(0o644)  # the change that makes it readable: tried again at once
        wait_until(
            lambda: manifest_status(migrated_url).get(LOCKED) == "loaded",
            timeout=60,
            message="the load after chmod",
        )
    finally:
        daemon.stop()
        shutil.rmtree(lake, ignore_errors=True)
