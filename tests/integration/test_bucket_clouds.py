"""The landing zone on Azure Blob Storage and on Google Cloud Storage, against their emulators.

Azurite (Microsoft's) and fake-gcs-server run as processes on 127.0.0.1; the CLI reaches them
through each cloud's standard variables, as it would reach the cloud. Per cloud: the real export
loads and a second run loads nothing, and an overwritten object replaces its rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest

from tests.cloud_emulators import Azurite, FakeGcs, start_azurite, start_fake_gcs
from tests.helpers import DAILY_HEADER, daily_rows, run_cli


class Cloud(Protocol):
    scheme: str
    env: dict[str, str]
    second_env: dict[str, str]

    def new_container(self) -> str: ...

    def put(self, container: str, key: str, body: bytes) -> None: ...


class AzureCloud:
    scheme = "az"

    def __init__(self, server: Azurite) -> None:
        self.server = server
        self.env = server.env
        # The second run names the account as for a real one (name, key, http endpoint).
        self.second_env = server.explicit_env

    def new_container(self) -> str:
        return self.server.new_container()

    def put(self, container: str, key: str, body: bytes) -> None:
        self.server.put(container, key, body)


class GcsCloud:
    scheme = "gs"

    def __init__(self, server: FakeGcs) -> None:
        self.server = server
        self.env = self.second_env = server.env

    def new_container(self) -> str:
        return self.server.new_bucket()

    def put(self, container: str, key: str, body: bytes) -> None:
        self.server.put(container, key, body)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    yield from start_azurite(tmp_path_factory.mktemp("azurite"))


@pytest.fixture(scope="module")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    yield from start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))


@pytest.fixture(params=["az", "gs"])
def cloud(request: pytest.FixtureRequest) -> Cloud:
    if request.param == "az":
        return AzureCloud(request.getfixturevalue("azurite"))
    return GcsCloud(request.getfixturevalue("fake_gcs"))


def once(
    url: str, landing: str, env: dict[str, str], *paths: str, command: str = "watch", code: int = 0
) -> dict[str, Any]:
    """``watch --once`` (or ``command`` with ``paths``) on the landing zone; its JSON summary."""
    args = ["--once"] if command == "watch" else []
    done = run_cli([command, *args, "--json", "--no-dbt", "--data-dir", landing, *paths], url, extra_env=env)
    try:
        payload: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"no JSON summary; stderr={done.stderr[-3000:]!r}") from exc
    assert done.returncode == code, (payload.get("files"), done.stderr[-3000:])
    return payload


def upload_folder(cloud: Cloud, folder: Path, container: str, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            cloud.put(container, f"{prefix}{path.relative_to(folder).as_posix()}", path.read_bytes())


def test_the_real_export_loads_from_the_cloud_and_a_second_run_loads_nothing(
    cloud: Cloud, migrated_url: str, fitbit_dir: Path
) -> None:
    container = cloud.new_container()
    upload_folder(cloud, fitbit_dir, container, "exports/fitbit/")
    landing = f"{cloud.scheme}://{container}/exports/fitbit/"
    first = once(migrated_url, landing, cloud.env)
    assert first["counts"]["loaded"] == 3, first["counts"]
    with psycopg.connect(migrated_url) as conn:
        daily = conn.execute("SELECT count(*) FROM raw.daily_activity").fetchone()
        sleep = conn.execute("SELECT count(*) FROM raw.sleep").fetchone()
        loaded = conn.execute(
            "SELECT source_path FROM ops.raw_ingest_manifest WHERE status = 'loaded' ORDER BY 1"
        ).fetchall()
    assert (daily, sleep) == ((1397,), (413,))
    assert [path for (path,) in loaded] == [
        "2016-03-12_2016-04-11/dailyActivity_merged.csv",
        "2016-04-12_2016-05-12/dailyActivity_merged.csv",
        "2016-04-12_2016-05-12/sleepDay_merged.csv",
    ]

    second = once(migrated_url, landing, cloud.second_env)
    assert second["rows_loaded"] == 0 and "loaded" not in second["counts"], second


def daily_csv(first_id: int) -> bytes:
    return ("\r\n".join([DAILY_HEADER, *daily_rows(2, 3, first_id=first_id)]) + "\r\n").encode()


def test_an_overwritten_object_replaces_its_rows(cloud: Cloud, migrated_url: str) -> None:
    container = cloud.new_container()
    landing = f"{cloud.scheme}://{container}/lake"
    cloud.put(container, "lake/a/dailyActivity_1.csv", daily_csv(1503960366))
    cloud.put(container, "lake/.hidden/dailyActivity_x.csv", daily_csv(1503960999))  # never considered
    cloud.put(container, "lake/sleepDay_broken.csv", b"\x1f\x8b\x08\x00 not csv")
    first = once(migrated_url, landing, cloud.env, code=1)
    assert outcomes(first) == {"a/dailyActivity_1.csv": "loaded", "sleepDay_broken.csv": "rejected"}, first

    # A reprocess reads the version by a HEAD, not from a listing: the same version is recorded
    # (Azure and GCS give the ETag quoted there, bare in a listing), so the next run skips it.
    listed = etag_of(migrated_url, "sleepDay_broken.csv")
    again = once(migrated_url, landing, cloud.env, "sleepDay_broken.csv", command="reprocess", code=1)
    assert outcomes(again) == {"sleepDay_broken.csv": "rejected"}, again
    assert etag_of(migrated_url, "sleepDay_broken.csv") == listed

    new_body = daily_csv(1503960366 + 100)  # same size, other users, within the same second
    assert len(new_body) == len(daily_csv(1503960366))
    cloud.put(container, "lake/a/dailyActivity_1.csv", new_body)
    second = once(migrated_url, landing, cloud.env)
    assert outcomes(second) == {"a/dailyActivity_1.csv": "loaded"}, second
    with psycopg.connect(migrated_url) as conn:
        ids = conn.execute("SELECT DISTINCT id FROM raw.daily_activity ORDER BY 1").fetchall()
    assert ids == [(1503960466,), (1503960467,)], "only the new version's rows remain"


def outcomes(payload: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["outcome"] for f in payload["files"]}


def etag_of(url: str, path: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT etag FROM ops.raw_ingest_manifest WHERE source_path = %s", (path,)
        ).fetchone()
    assert row is not None, path
    return str(row[0]) if row[0] is not None else None
