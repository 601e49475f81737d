"""A bucket as the landing zone, against a real S3 API server (moto's server mode on 127.0.0.1).

The same pipeline and the same rules as for a folder: `--once` on the real export, a second run
that loads nothing, an overwrite that replaces its rows, a copy that is a duplicate, the stream
read back from its start for the checked path, and two daemons that load 100 objects once.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.daemon_helpers import DaemonProcess, wait_until
from tests.helpers import DAILY_HEADER, daily_rows, run_cli
from tests.s3_server import S3Server, start_s3_server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from start_s3_server(tmp_path_factory.mktemp("moto") / "moto.log")


def daily_csv(users: int, days: int, first_id: int = 1503960366) -> bytes:
    return ("\r\n".join([DAILY_HEADER, *daily_rows(users, days, first_id=first_id)]) + "\r\n").encode()


def once(
    s3: S3Server, url: str, bucket_url: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    done = run_cli(
        ["watch", "--once", "--json", "--no-dbt", "--data-dir", bucket_url, *extra],
        url,
        extra_env={**s3.env, **(env or {})},
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"no JSON summary; stderr={done.stderr[-3000:]!r}") from exc


def outcomes(payload: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["outcome"] for f in payload["files"]}


def test_once_loads_the_real_export_from_a_bucket_and_a_second_run_nothing(
    s3: S3Server, migrated_url: str, fitbit_dir: Path
) -> None:
    bucket = s3.new_bucket()
    s3.upload_folder(fitbit_dir, bucket, "exports/fitbit/")
    code, first = once(s3, migrated_url, f"s3://{bucket}/exports/fitbit/")
    assert code == 0, first
    assert first["counts"]["loaded"] == 3, first["counts"]
    with psycopg.connect(migrated_url) as conn:
        daily = conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()
        sleep = conn.execute("SELECT count(*) FROM raw.sleep").fetchone()
        paths = conn.execute(
            "SELECT source_path, etag IS NOT NULL FROM ops.raw_ingest_manifest WHERE status = 'loaded'"
            " ORDER BY 1"
        ).fetchall()
    assert (daily, sleep) == ((1397,), (413,))
    # The identity is the key relative to the prefix; the ETag is kept beside size and time.
    assert paths == [
        ("2016-03-12_2016-04-11/dailyActivity_merged.csv", True),
        ("2016-04-12_2016-05-12/dailyActivity_merged.csv", True),
        ("2016-04-12_2016-05-12/sleepDay_merged.csv", True),
    ]
    # Variables set but empty (as Compose passes unset ones) count as unset, not as values.
    empty = {"AWS_ENDPOINT_URL_S3": "", "AWS_SESSION_TOKEN": ""}
    code, second = once(s3, migrated_url, f"s3://{bucket}/exports/fitbit/", env=empty)
    assert code == 0, second
    assert second["rows_loaded"] == 0 and "loaded" not in second["counts"], second

    status = run_cli(["status", "--json", "--data-dir", f"s3://{bucket}/exports/fitbit/"], migrated_url)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "2016-04-12_2016-05-12/sleepDay_merged.csv" in status.stdout


def test_an_overwrite_replaces_its_rows_and_a_copy_is_a_duplicate(s3: S3Server, migrated_url: str) -> None:
    bucket = s3.new_bucket()
    bucket_url = f"s3://{bucket}/lake"
    s3.put(bucket, "lake/a/dailyActivity_1.csv", daily_csv(users=2, days=3))
    s3.put(bucket, "lake/.hidden/dailyActivity_x.csv", daily_csv(users=1, days=1))  # never considered
    code, first = once(s3, migrated_url, bucket_url)
    assert code == 0 and outcomes(first) == {"a/dailyActivity_1.csv": "loaded"}, first

    # Overwritten with new content of the same size within the same second: the ETag tells.
    s3.put(bucket, "lake/a/dailyActivity_1.csv", daily_csv(users=2, days=3, first_id=1503960367 + 100))
    s3.put(bucket, "lake/b/dailyActivity_copy.csv", daily_csv(users=2, days=3))  # the first content again
    code, second = once(s3, migrated_url, bucket_url)
    assert code == 0, second
    # The copy is new and small: its group answers it first, a duplicate of a/ (which still holds
    # that content); a/'s replace, loaded alone after the group, then hands its rows over to b/.
    assert outcomes(second) == {"a/dailyActivity_1.csv": "loaded", "b/dailyActivity_copy.csv": "duplicate"}, (
        second
    )
    s3.put(bucket, "lake/c/dailyActivity_again.csv", daily_csv(users=2, days=3))
    code, third = once(s3, migrated_url, bucket_url)
    assert code == 0 and outcomes(third) == {"c/dailyActivity_again.csv": "duplicate"}, third
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute(
            "SELECT l.source_path, count(*) FROM raw.daily_activity"
            " JOIN ops.file_loads l ON l.load_id = _load_id GROUP BY 1 ORDER BY 1"
        ).fetchall()
        statuses: dict[str, str] = dict(
            conn.execute("SELECT source_path, status FROM ops.raw_ingest_manifest").fetchall()
        )
    # One copy of each content: the new version of a/, and the first content (now held by b/).
    assert [count for _, count in rows] == [6, 6], rows
    assert statuses == {
        "a/dailyActivity_1.csv": "loaded",
        "b/dailyActivity_copy.csv": "loaded",
        "c/dailyActivity_again.csv": "duplicate",
    }


def test_a_rejected_object_is_reprocessed_and_bad_lines_are_checked_from_the_start(
    s3: S3Server, migrated_url: str
) -> None:
    bucket = s3.new_bucket()
    bucket_url = f"s3://{bucket}/"
    body = daily_csv(users=3, days=40).splitlines(keepends=True)
    body[50] = b"1503960366,not a date,1,1,1,0,1,1,1,0,1,1,1,1,1\r\n"  # the checked path: GET again
    s3.put(bucket, "dailyActivity_bad_line.csv", b"".join(body))
    s3.put(bucket, "sleepDay_broken.csv", b"\x1f\x8b\x08\x00 not csv")
    code, first = once(s3, migrated_url, bucket_url)
    assert code == 1, first
    files = {f["path"]: f for f in first["files"]}
    assert files["dailyActivity_bad_line.csv"]["outcome"] == "loaded"
    assert files["dailyActivity_bad_line.csv"]["rows_loaded"] == 119
    assert files["dailyActivity_bad_line.csv"]["rows_rejected"] == 1
    assert files["sleepDay_broken.csv"]["outcome"] == "rejected"
    assert "gzip" in files["sleepDay_broken.csv"]["reason"]

    done = run_cli(
        ["reprocess", "--json", "--no-dbt", "--data-dir", bucket_url, "sleepDay_broken.csv"],
        migrated_url,
        extra_env=s3.env,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert outcomes(json.loads(done.stdout)) == {"sleepDay_broken.csv": "rejected"}


def test_the_object_stream_reads_lines_and_goes_back_to_its_start(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.landing.bucket import BucketZone

    for name, value in s3.env.items():  # obstore reads the standard variables, as the CLI's does
        monkeypatch.setenv(name, value)
    bucket = s3.new_bucket()
    body = b"".join(f"line {i}\n".encode() for i in range(200_000))  # 2.3 MB: several chunks
    s3.put(bucket, "p/x/sleepDay_big.csv", body)
    zone = BucketZone(f"s3://{bucket}/p/", allow_http=True)
    (candidate,) = list(zone.scan())
    assert candidate.relative == "x/sleepDay_big.csv" and candidate.version is not None
    assert candidate.stat() == candidate.version
    with candidate.open() as handle:
        assert handle.readline() == b"line 0\n"
        assert handle.read() == body[len(b"line 0\n") :]
        handle.seek(0)
        assert handle.read(10) == body[:10]
        with pytest.raises(io.UnsupportedOperation):
            handle.seek(5_000_000)
    assert list(zone.scan(after="x/sleepDay_big.csv")) == []
    # Overwritten after the listing: the GET asks for the version listed (If-Match) and fails.
    s3.put(bucket, "p/x/sleepDay_big.csv", body[:1000])
    with pytest.raises(OSError, match="changed while it was being read"):
        candidate.open()
    (fresh,) = list(zone.scan())
    with fresh.open() as handle:
        assert handle.read() == body[:1000]
    with pytest.raises(FileNotFoundError):
        zone.candidate("x/missing.csv").stat()


def test_two_daemons_on_one_bucket_load_100_new_objects_exactly_once(
    s3: S3Server, migrated_url: str, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    bucket_url = f"s3://{bucket}/drop/"
    daemons = [
        DaemonProcess(
            bucket_url,
            migrated_url,
            tmp_path / f"daemon{i}.log",
            no_dbt=True,
            extra_args=["--poll-interval", "0.2", "--reconcile-interval", "1"],
            extra_env=s3.env,
        )
        for i in range(2)
    ]
    for daemon in daemons:
        daemon.start()
    try:
        for daemon in daemons:
            daemon.wait_ready()
            assert daemon.metric("wearable_watcher_backend", backend="listing") == 1
        for i in range(100):
            s3.put(
                bucket, f"drop/2016/u{i:03d}/dailyActivity_{i:03d}.csv", daily_csv(1, 2, first_id=10**9 + i)
            )

        def loaded() -> int:
            with psycopg.connect(migrated_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM ops.raw_ingest_manifest WHERE status = 'loaded'"
                ).fetchone()
            return int(row[0]) if row else 0

        wait_until(lambda: loaded() == 100, timeout=120, message="100 objects loaded")

        # An overwrite sorts before the cursor: the next full listing (each second here) finds it.
        s3.put(bucket, "drop/2016/u000/dailyActivity_000.csv", daily_csv(1, 3, first_id=10**9))

        def replaced() -> bool:
            with psycopg.connect(migrated_url) as conn:
                row = conn.execute("SELECT count(*) FROM ops.file_loads").fetchone()
            return row == (101,)

        wait_until(replaced, timeout=60, message="the overwritten object loaded again")
        for daemon in daemons:
            assert daemon.poll() is None, daemon.log_tail()
    finally:
        for daemon in daemons:
            daemon.stop()
    with psycopg.connect(migrated_url) as conn:
        loads = conn.execute("SELECT count(*), count(DISTINCT source_path) FROM ops.file_loads").fetchone()
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT (id, activity_date)) FROM raw.daily_activity"
        ).fetchone()
        by_instance = conn.execute(
            "SELECT r.instance, sum(r.files_loaded) FROM ops.pipeline_runs r GROUP BY 1"
        ).fetchall()
    assert loads == (101, 100), loads  # the overwritten object's first load was replaced
    assert rows == (201, 201), rows
    assert sum(int(n or 0) for _, n in by_instance) == 101, by_instance


def test_a_bucket_that_cannot_be_listed_stops_the_start_with_the_reason(
    s3: S3Server, migrated_url: str
) -> None:
    done = run_cli(
        ["watch", "--once", "--no-dbt", "--data-dir", "s3://no-such-bucket-here/exports/"],
        migrated_url,
        extra_env=s3.env,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "the bucket s3://no-such-bucket-here/exports/ cannot be listed" in done.stderr
    assert "NoSuchBucket" in done.stderr or "404" in done.stderr, done.stderr[-2000:]
