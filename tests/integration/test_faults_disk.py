"""Fault suite: the database's disk fills up during a load. A recorded reason, no crash, no loss."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.helpers import SLEEP_HEADER, once_json, write_big_daily, write_csv
from tests.pg_control import ThrowawayServer

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: room for a few thousand rows, not for a big file."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mount_point)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_a_recorded_failure(
    tmp_path: Path, throwaway_server: ThrowawayServer, small_disk: Path
) -> None:
    from watcher.database import migrate

    url = throwaway_server.url
    migrate(url)
    location = small_disk / "tablespace"
    location.mkdir()
    owner = pwd.getpwnam(throwaway_server.system_user) if throwaway_server.system_user else None
    if owner is not None:
        os.chown(location, owner.pw_uid, owner.pw_gid)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLESPACE small LOCATION {}").format(sql.Literal(str(location))))
        conn.execute("ALTER TABLE raw.daily_activity SET TABLESPACE small")
    lake = tmp_path / "lake"
    write_big_daily(lake / "dailyActivity_too_big.csv", 100_000)
    write_csv(lake / "sleepDay_fits.csv", SLEEP_HEADER, ["1503960366,4/12/2016 12:00:00 AM,1,327,346"])
    try:
        code, result = once_json(lake, url, "--no-dbt")
        outcomes = {f["path"]: f for f in result["files"]}
        assert code == 1, result
        assert outcomes["sleepDay_fits.csv"]["outcome"] == "loaded"
        too_big = outcomes["dailyActivity_too_big.csv"]
        assert too_big["outcome"] == "failed"
        assert "space" in too_big["reason"].lower() or "could not extend" in too_big["reason"].lower()
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()
            entry = conn.execute(
                "SELECT status, error_reason FROM ops.raw_ingest_manifest WHERE source_path = 'dailyActivity_too_big.csv'"
            ).fetchone()
        assert rows == (0,), "no partial rows of the file that did not fit"
        assert entry is not None and entry[0] == "failed" and entry[1]
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE raw.daily_activity")
            conn.execute("ALTER TABLE raw.daily_activity SET TABLESPACE pg_default")
            conn.execute("DROP TABLESPACE small")
