"""A real Prometheus server runs the shipped configuration and rules against the real daemon.

The configuration is deploy/prometheus/prometheus.yml with only the scrape targets moved to
loopback ports chosen here and shorter intervals; the shipped alert rules are loaded beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from watcher.sample_data import generate

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
HEALTH_DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "pipeline-health.json"
WATCHER_JOB = "wearable-watcher"
PROMETHEUS_BINARIES = ("/usr/bin/prometheus", "prometheus")
T = TypeVar("T")


def prometheus_binary() -> str | None:
    for candidate in PROMETHEUS_BINARIES:
        if found := shutil.which(candidate):
            return found
    return None


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    found = prometheus_binary()
    if found is None:
        pytest.skip("the prometheus server is not installed (Debian package: prometheus)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def derived_config(watcher_port: int, prometheus_port: int, folder: Path) -> Path:
    """The shipped config with loopback targets and 1 s intervals; the rules copied beside it."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    targets = {WATCHER_JOB: watcher_port, "prometheus": prometheus_port}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets), "the shipped scrape jobs changed: update this test"
    for name, port in targets.items():
        jobs[name]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    for rule_file in config["rule_files"]:
        shutil.copy(PROMETHEUS_DIR / rule_file, folder / rule_file)
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -signal.SIGKILL


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    """Call probe until it returns something other than None (errors count as None)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            result = probe()
            if result is not None:
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            return dict(get_json(url))
        except urllib.error.HTTPError as exc:  # 400 and 422 carry the parse error as JSON
            return dict(json.loads(exc.read()))

    def samples(self, expr: str) -> list[dict[str, Any]] | None:
        result = self.query(expr)
        assert result["status"] == "success", result
        return list(result["data"]["result"]) or None


@contextlib.contextmanager
def prometheus_server(binary: str, tmp_path: Path, watcher_port: int) -> Iterator[Prometheus]:
    port = free_port()
    folder = tmp_path / "prometheus"
    folder.mkdir()
    config = derived_config(watcher_port, port, folder)
    cmd = [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
           f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    with (folder / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            server = Prometheus(port)
            wait_for("Prometheus to be ready", lambda: ready(server), timeout=60)
            yield server
        finally:
            stop(proc)


def ready(server: Prometheus) -> bool | None:
    with urllib.request.urlopen(f"{server.base}/-/ready", timeout=2) as response:
        return True if response.status == 200 else None


def dashboard_expressions() -> list[tuple[str, str]]:
    board = json.loads(HEALTH_DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_shipped_rules_load_and_fire_and_dashboard_queries_parse(prometheus_bin: str, tmp_path: Path) -> None:
    nobody = free_port()  # no watcher listens here: the target is down
    with prometheus_server(prometheus_bin, tmp_path, nobody) as prom:
        rules = prom_rules(prom)
        names = {rule["name"] for rule in rules}
        assert {"WearableWatcherDown", "WearableDbtBuildFailing", "WearableFilesRejected"} <= names
        wait_for("every rule evaluated", lambda: all_rules_healthy(prom), timeout=30)
        alert = wait_for("WearableWatcherDown to be pending", lambda: watcher_down(prom), 30)
        assert alert["labels"]["instance"] == f"127.0.0.1:{nobody}"
        expressions = dashboard_expressions()
        assert len(expressions) >= 15
        for title, expr in expressions:
            result = prom.query(expr)
            assert result["status"] == "success", f"{title}: {expr}: {result.get('error')}"


def prom_rules(prom: Prometheus) -> list[dict[str, Any]]:
    groups = get_json(f"{prom.base}/api/v1/rules")["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def all_rules_healthy(prom: Prometheus) -> bool | None:
    rules = prom_rules(prom)
    bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not any(health == "err" for _, health, _ in bad), bad
    return True if rules and not bad else None


def watcher_down(prom: Prometheus) -> dict[str, Any] | None:
    alerts = get_json(f"{prom.base}/api/v1/alerts")["data"]["alerts"]
    found = [
        a for a in alerts if a["labels"]["alertname"] == "WearableWatcherDown" and "instance" in a["labels"]
    ]
    return dict(found[0]) if found else None


# --- with the real daemon ------------------------------------------------------------------


@contextlib.contextmanager
def daemon(data_dir: Path, port: int, database_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_"))}
    env.update(DATABASE_URL=database_url, WEARABLE_DEBOUNCE_SECONDS="0.2",
               WEARABLE_LOG_FORMAT="json")  # fmt: skip
    cmd = [sys.executable, "-m", "watcher", "watch", "--data-dir", str(data_dir),
           "--metrics-addr", f"127.0.0.1:{port}", "--no-dbt"]  # fmt: skip
    with (tmp_path / "daemon.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop(proc, timeout=30)


def samples_while_alive(
    proc: subprocess.Popen[bytes], prom: Prometheus, expr: str
) -> list[dict[str, Any]] | None:
    """The query's samples; an AssertionError (which wait_for does not retry) once the daemon exited."""
    code = proc.poll()
    assert code is None, f"the daemon exited with code {code}"
    return prom.samples(expr)


def data_lines(files: list[Path]) -> int:
    return sum(len(f.read_bytes().splitlines()) - 1 for f in files)


def daemon_log(tmp_path: Path) -> str:
    return (tmp_path / "daemon.log").read_text(errors="replace")[-3000:]


@pytest.mark.slow
def test_prometheus_scrapes_the_real_daemon(prometheus_bin: str, database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data_lake"
    files = generate(data_dir, users=3, days=14)
    port = free_port()
    with (
        daemon(data_dir, port, database_url, tmp_path) as proc,
        prometheus_server(prometheus_bin, tmp_path, port) as prom,
    ):
        try:
            pending = wait_for(
                "a wearable_files_pending sample through Prometheus",
                lambda: samples_while_alive(proc, prom, "wearable_files_pending"),
                timeout=90,
            )
            assert pending[0]["metric"]["job"] == "wearable-watcher"
            assert prom.samples(f'up{{job="{WATCHER_JOB}"}} == 1')
            expected = data_lines(files)
            rows = wait_for(
                "every sample row counted by wearable_rows_loaded_total",
                lambda: samples_while_alive(proc, prom, f"sum(wearable_rows_loaded_total) == {expected}"),
                timeout=90,
            )
            assert rows
            health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
            assert health.status == 200
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log ---\n{daemon_log(tmp_path)}") from exc
        code = stop(proc, timeout=30)
    assert code == 0, f"SIGTERM did not stop the daemon cleanly: exit code {code}"
    assert "Traceback" not in daemon_log(tmp_path)


def test_derived_config_only_moves_the_targets(tmp_path: Path) -> None:
    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    derived = yaml.safe_load(derived_config(1111, 2222, tmp_path).read_text())
    for config in (shipped, derived):
        del config["global"]
        for job in config["scrape_configs"]:
            job.pop("static_configs")
    assert derived == shipped
    assert re.fullmatch(r"watcher:\d+", shipped_watcher_target())


def shipped_watcher_target() -> str:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == WATCHER_JOB)
    return str(job["static_configs"][0]["targets"][0])
