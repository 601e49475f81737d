"""Helpers for tests (and benchmarks) that drive the real daemon as a process.

``DaemonProcess`` starts ``python -m watcher watch`` against a database, on a free port, with its
log in a file; ``metrics`` scrapes ``/metrics`` and parses it with prometheus-client's own parser;
``wait_until`` polls a condition up to a deadline. Every wait is bounded; ``stop`` always ends
the process (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.helpers import DAILY_HEADER, daily_rows, write_csv

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], T | None], *, timeout: float, interval: float = 0.1, message: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy (so never None), and return that;
    AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, psycopg.Error, ValueError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}{detail}")
        time.sleep(interval)


def write_daily(path: Path, *, users: int = 1, days: int = 3, first_id: int = 1503960366) -> Path:
    """A small daily-activity export (CRLF, M/D/YYYY dates, 10-digit ids): users x days rows."""
    return write_csv(path, DAILY_HEADER, daily_rows(users, days, first_id=first_id))


def drop_daily(
    data_dir: Path, name: str, *, users: int = 1, days: int = 3, first_id: int = 1503960366
) -> Path:
    """Write a file under a temporary name, then rename it into place (as most writers do)."""
    final = data_dir / name
    temporary = final.with_name(final.name + ".part")
    write_daily(temporary, users=users, days=days, first_id=first_id)
    os.replace(temporary, final)
    return final


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def metric_sum(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= set(lbls))


class DaemonProcess:
    """``wearable-pipeline watch`` as a child process."""

    def __init__(
        self,
        data_dir: Path | str,
        database_url: str,
        log_path: Path,
        *,
        debounce: float = 0.3,
        no_dbt: bool = False,
        polling: bool = False,
        extra_args: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.log_path = log_path
        self.port = port or free_port()
        self.args = [
            sys.executable,
            "-m",
            "watcher",
            "watch",
            "--data-dir",
            str(data_dir),
            "--metrics-addr",
            f"127.0.0.1:{self.port}",
            "--debounce",
            str(debounce),
            *(["--no-dbt"] if no_dbt else []),
            *(["--polling"] if polling else []),
            *extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_"))}
        env.update({"DATABASE_URL": database_url, "WEARABLE_LOG_FORMAT": "json"})
        # dbt's parse cache and log next to the daemon's log: several daemons of one test (and the
        # tests of other workers) never write each other's (a restart of this one reuses them).
        dbt_folder = log_path.with_name(log_path.name + ".dbt")
        env.update({"DBT_TARGET_PATH": str(dbt_folder / "target"), "DBT_LOG_PATH": str(dbt_folder / "logs")})
        env.update(extra_env or {})
        self.env = env
        self.cwd = REPO_ROOT
        """Where the process starts: its ``watcher`` package is the one found there first."""
        self.process: subprocess.Popen[bytes] | None = None

    # -- process ----------------------------------------------------------------------------------

    def start(self) -> DaemonProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the daemon did not exit within {timeout:g} s\n{self.log_tail()}") from exc

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL when it does not go. Safe to call twice."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- HTTP -------------------------------------------------------------------------------------

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        assert status == 200, body
        return parse_metrics(body)

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(self.metrics(), name, **labels)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /readyz answers 200: watching, backlog done, dbt warm."""

        def ready() -> bool:
            if self.poll() is not None:
                raise AssertionError(f"the daemon exited with {self.poll()}\n{self.log_tail()}")
            return self.get("/readyz", timeout=2.0)[0] == 200

        try:
            wait_until(ready, timeout=timeout, interval=0.1, message="/readyz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None


# -- the database ---------------------------------------------------------------------------------


def query(url: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement.encode(), params).fetchall()


def scalar(url: str, statement: str, params: Sequence[Any] = ()) -> Any:
    rows = query(url, statement, params)
    return rows[0][0] if rows else None


def daily_rows_loaded(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM raw.daily_activity"))


def manifest_status(url: str) -> dict[str, str]:
    return dict(query(url, "SELECT source_path, status FROM ops.raw_ingest_manifest"))


def finished_runs(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT run_id, trigger, status, files_loaded, rows_loaded, dbt_status"
            " FROM ops.pipeline_runs WHERE finished_at IS NOT NULL ORDER BY run_id"
        ).fetchall()


def dbt_available() -> bool:
    return (REPO_ROOT / "dbt" / "dbt_project.yml").is_file()


def terminate_all(daemons: Sequence[DaemonProcess]) -> None:
    for daemon in daemons:
        with contextlib.suppress(Exception):
            daemon.stop()


class TcpProxy:
    """A TCP relay to the database that a test can cut (refuse and drop) and restore.

    Clients connect to ``127.0.0.1:port``; ``cut`` closes every relayed connection and refuses new
    ones (a database that went away), ``restore`` listens again on the same port. The server may
    listen on TCP or on a Unix socket (the embedded server): a host that is a folder is a socket's.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.unix_socket = (
            os.path.join(target_host, f".s.PGSQL.{target_port}") if target_host.startswith("/") else None
        )
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def with_port(self, url: str) -> str:
        params = conninfo_to_dict(url)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if self.unix_socket is None:
            upstream = socket.create_connection(self.target, timeout=5)
        else:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.settimeout(5)
            try:
                upstream.connect(self.unix_socket)
            except OSError:
                upstream.close()
                raise
        upstream.settimeout(None)
        return upstream

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() first: a bare close() leaves a blocked accept() listening (Linux).
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def restore(self) -> None:
        self.start()

    def close(self) -> None:
        self.cut()
