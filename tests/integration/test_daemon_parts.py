"""The daemon's parts on their own: the real observer, the HTTP endpoint."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from tests.daemon_helpers import free_port, parse_metrics, wait_until
from watcher.http_endpoint import HttpEndpoint
from watcher.landing.observer import filesystem_type, is_remote, start_watcher
from watcher.landing.readiness import Rules, Tracker


def tracker() -> Tracker:
    return Tracker(Rules(window=0.0, stale_after=30.0))


@pytest.mark.parametrize("force_polling", [False, True])
def test_the_observer_records_data_files_only(tmp_path: Path, force_polling: bool) -> None:
    files = tracker()
    before = tmp_path.stat().st_mtime_ns
    watcher = start_watcher(tmp_path, files, force_polling=force_polling, polling_interval=0.2)
    try:
        assert watcher.backend == ("polling" if force_polling else "inotify")
        assert watcher.alive()
        assert list(tmp_path.iterdir()) == [] and tmp_path.stat().st_mtime_ns == before, "wrote into the lake"
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "dailyActivity.csv").write_text("x\n")
        (tmp_path / ".hidden.csv").write_text("x\n")
        (tmp_path / "upload.csv.part").write_text("x\n")
        (tmp_path / ".tmpdir").mkdir()
        (tmp_path / ".tmpdir" / "inside.csv").write_text("x\n")
        wait_until(lambda: len(files) >= 1, timeout=10, message="an observation")
        time.sleep(0.5)  # let any stray event arrive before checking none came
        assert files.paths() == [str(tmp_path / "sub" / "dailyActivity.csv")]
    finally:
        watcher.stop()
    assert not watcher.alive()


def test_a_rename_within_the_landing_zone_moves_the_observation(tmp_path: Path) -> None:
    files = tracker()
    watcher = start_watcher(tmp_path, files, force_polling=False, polling_interval=1.0)
    try:
        (tmp_path / "a.csv").write_text("x\n")
        wait_until(lambda: str(tmp_path / "a.csv") in files, timeout=10, message="a.csv")
        (tmp_path / "a.csv").rename(tmp_path / "b.csv")
        wait_until(lambda: files.paths() == [str(tmp_path / "b.csv")], timeout=10, message="b.csv only")
        (tmp_path / "b.csv").unlink()
        wait_until(lambda: len(files) == 0, timeout=10, message="the deletion")
    finally:
        watcher.stop()


def test_filesystem_type_reads_the_longest_mount_point(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /data rw,relatime shared:2 - nfs4 server:/export rw\n"
        "41 40 0:51 / /data/local\\040lake rw - tmpfs tmpfs rw\n"
        "garbage line\n"
    )
    assert filesystem_type(Path("/data/lake"), mountinfo) == "nfs4"
    assert filesystem_type(Path("/data/local lake/x"), mountinfo) == "tmpfs"
    assert filesystem_type(Path("/database"), mountinfo) == "ext4"
    assert filesystem_type(Path("/x"), tmp_path / "missing") is None
    assert is_remote("nfs4") and is_remote("fuse.sshfs") and is_remote("virtiofs") and is_remote("9p")
    assert not is_remote("ext4") and not is_remote("overlay") and not is_remote(None)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_the_endpoint_serves_metrics_health_and_readiness() -> None:
    registry = CollectorRegistry()
    counter = Counter("wearable_test_things_total", "Things.", ["table"], registry=registry)
    counter.labels(table="sleep").inc(3)
    state = {"alive": True, "ready": False}
    endpoint = HttpEndpoint(
        "127.0.0.1",
        free_port(),
        liveness=lambda: (state["alive"], "ok" if state["alive"] else "observer stopped"),
        readiness=lambda: (state["ready"], "ready" if state["ready"] else "the database does not answer"),
        registry=registry,
    )
    endpoint.start()
    try:
        status, body = _get(endpoint.port, "/metrics")
        assert status == 200
        assert parse_metrics(body)[("wearable_test_things_total", (("table", "sleep"),))] == 3
        assert _get(endpoint.port, "/healthz") == (200, "ok\n")
        assert _get(endpoint.port, "/readyz") == (503, "the database does not answer\n")
        state.update(alive=False, ready=True)
        assert _get(endpoint.port, "/healthz") == (503, "observer stopped\n")
        assert _get(endpoint.port, "/readyz") == (200, "ready\n")
        assert _get(endpoint.port, "/nothing")[0] == 404
    finally:
        endpoint.stop()


def test_the_endpoint_refuses_a_taken_port() -> None:
    first = HttpEndpoint("127.0.0.1", 0, liveness=lambda: (True, ""), readiness=lambda: (True, ""))
    first.start()
    try:
        second = HttpEndpoint(
            "127.0.0.1", first.port, liveness=lambda: (True, ""), readiness=lambda: (True, "")
        )
        with pytest.raises(OSError):
            second.start()
    finally:
        first.stop()
