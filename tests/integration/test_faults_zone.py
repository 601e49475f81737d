"""Fault suite, the landing zone: half-written files, folders that cannot be listed, heaps of
ignored files, a replaced folder, SIGHUP, and a daemon that must never write into the lake.

Every test drives the real program as a process against a real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.daemon_helpers import (
    DaemonProcess,
    daily_rows_loaded,
    drop_daily,
    finished_runs,
    manifest_status,
    scalar,
    wait_until,
)
from tests.helpers import DAILY_HEADER, SLEEP_HEADER, daily_rows, run_cli, write_csv
from tests.unit.test_scanner import make_deep_folders
from watcher.landing.observer import EVENT_GRACE_SECONDS
from watcher.landing.scanner import FOLDER_DENIED_REASON, PATH_TOO_LONG_REASON

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli_env(url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "WEARABLE_", "DATABASE_URL"))}
    env["WEARABLE_LOG_FORMAT"] = "json"
    if url is not None:
        env["DATABASE_URL"] = url
    return env


def log_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == name]


# -- item 4: `watch --once` and a file still being written ----------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    path, rows, per_chunk, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    header = {header!r}
    row = "1503960366,{{day}},13162,8.5,8.5,0,1.88,0.55,6.06,0,25,13,328,728,1985\\r\\n"
    with open(path, "w", newline="") as out:
        out.write(header + "\\r\\n")
        out.flush()
        for i in range(0, rows, per_chunk):
            out.write("".join(row.format(day=f"{{1 + (j // 28) % 12}}/{{1 + j % 28}}/{{2000 + j // 336}}")
                              for j in range(i, min(rows, i + per_chunk))))
            out.flush()
            time.sleep(pause)
    """
).format(header=DAILY_HEADER)
ROWS = 940


def start_writer(path: Path, per_chunk: int, pause: float) -> subprocess.Popen[bytes]:
    """A real process appending rows to ``path`` in chunks, flushing each, pausing in between."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(ROWS), str(per_chunk), str(pause)]
    )
    wait_until(
        lambda: path.exists() and path.stat().st_size > 200, timeout=30, message="the writer's first rows"
    )
    return writer


def once(lake: Path, url: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    done = run_cli(["watch", "--once", "--json", "--no-dbt", "--data-dir", str(lake), *extra], url)
    try:
        payload = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"no JSON summary: {done.stdout!r} {done.stderr[-3000:]!r}") from exc
    return done.returncode, payload, done.stderr


def test_once_leaves_a_file_still_being_written_unread(tmp_path: Path, migrated_url: str) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    write_csv(lake / "sleepDay_merged.csv", SLEEP_HEADER, ["1503960366,4/12/2016 12:00:00 AM,1,327,346"])
    growing = lake / "dailyActivity_merged.csv"
    writer = start_writer(growing, per_chunk=2, pause=0.05)  # 940 rows in about 25 s
    try:
        code, result, _ = once(lake, migrated_url, "--debounce", "1")
        still_writing = writer.poll() is None
    finally:
        writer.wait(120)
    assert still_writing, "the writer finished before the pass ended: the test proves nothing"
    assert code == 1, result
    assert result["pending"] == ["dailyActivity_merged.csv"]
    assert result["counts"] == {"loaded": 1, "pending": 1}
    assert daily_rows_loaded(migrated_url) == 0, "a half-written file was read"
    assert "dailyActivity_merged.csv" not in manifest_status(migrated_url)
    text = run_cli(["watch", "--once", "--no-dbt", "--data-dir", str(lake)], migrated_url)
    assert text.returncode == 0, text.stdout + text.stderr[-2000:]
    assert daily_rows_loaded(migrated_url) == ROWS, "once complete, the file loads whole"


def test_once_waits_for_a_file_that_is_finished_within_its_wait(tmp_path: Path, migrated_url: str) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    growing = lake / "dailyActivity_merged.csv"
    writer = start_writer(growing, per_chunk=20, pause=0.1)  # 940 rows in about 5 s
    try:
        code, result, _ = once(lake, migrated_url, "--debounce", "2.5")
    finally:
        writer.wait(120)
    assert (code, result["pending"], result["counts"]) == (0, [], {"loaded": 1}), result
    assert daily_rows_loaded(migrated_url) == ROWS


# -- item 7: folders that cannot be listed, paths over the system's limit ------------------------


def without_dac_override() -> Callable[[], None] | None:
    """For a child run by root: drop the capabilities that let root enter any folder, so that a
    folder with mode 000 refuses it as it refuses everyone (PR_CAPBSET_DROP before the exec)."""
    if os.geteuid() != 0:
        return None

    def drop() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


@contextlib.contextmanager
def relayed_over_tcp(url: str) -> Iterator[str]:
    """``url`` itself when it names a TCP server; for a server on a Unix socket (the embedded one,
    whose socket folder a child without DAC capabilities may not enter), a URL of a loopback TCP
    relay to that socket for as long as the block runs."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "")
    if not host.startswith("/"):
        yield url
        return
    target = os.path.join(host, f".s.PGSQL.{params.get('port') or 5432}")
    listener = socket.create_server(("127.0.0.1", 0))

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=(a, b), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    params.update(host="127.0.0.1", port=str(listener.getsockname()[1]))
    try:
        yield make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
    finally:
        listener.close()


@pytest.fixture
def locked_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "lake" / "locked"
    write_csv(folder / "dailyActivity_hidden_away.csv", DAILY_HEADER, daily_rows(1, 2))
    folder.chmod(0)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


def test_folders_that_cannot_be_listed_are_recorded_with_a_reason(
    tmp_path: Path, migrated_url: str, locked_folder: Path
) -> None:
    lake = locked_folder.parent
    write_csv(lake / "dailyActivity_ok.csv", DAILY_HEADER, daily_rows(1, 3))
    make_deep_folders(lake / "deep", 25)
    with relayed_over_tcp(migrated_url) as url:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "watcher",
                "watch",
                "--once",
                "--json",
                "--no-dbt",
                "--data-dir",
                str(lake),
            ],
            env=cli_env(url),
            capture_output=True,
            text=True,
            timeout=180,
            preexec_fn=without_dac_override(),
        )
    assert done.stdout, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert done.returncode == 1, "entries that cannot be read are failures, like any bad input"
    reasons = {f["path"]: (f["outcome"], f["reason"]) for f in result["files"]}
    assert reasons["locked"] == ("rejected", FOLDER_DENIED_REASON)
    (deep,) = [p for p in reasons if p.startswith("deep/")]
    assert reasons[deep] == ("rejected", PATH_TOO_LONG_REASON)
    assert reasons["dailyActivity_ok.csv"][0] == "loaded"
    logged = {e["path"]: e["reason"] for e in named(log_events(done.stderr), "file_rejected")}
    assert logged["locked"] == FOLDER_DENIED_REASON and logged[deep] == PATH_TOO_LONG_REASON
    status = run_cli(["status", "--json"], migrated_url)
    listed = {f["path"]: (f["status"], f["reason"]) for f in json.loads(status.stdout)["files"]}
    assert listed["locked"] == ("rejected", FOLDER_DENIED_REASON)
    assert listed[deep] == ("rejected", PATH_TOO_LONG_REASON)


# -- item 9: ten thousand ignored files -----------------------------------------------------------


def make_ignored_heap(lake: Path, count: int = 10_000) -> None:
    notes = lake / "notes"
    notes.mkdir(parents=True)
    for i in range(count):
        (lake / f"notes_{i:05d}.json" if i % 2 else notes / f"notes_{i:05d}.csv").write_text("{}\n")


def test_ten_thousand_ignored_files_cost_one_statement_and_one_line(
    tmp_path: Path, migrated_url: str
) -> None:
    lake = tmp_path / "lake"
    make_ignored_heap(lake)
    write_csv(lake / "sleepDay_merged.csv", SLEEP_HEADER, ["1503960366,4/12/2016 12:00:00 AM,1,327,346"])
    code, result, stderr = once(lake, migrated_url)
    assert code == 0, stderr[-2000:]
    assert result["counts"] == {"loaded": 1, "ignored": 10_000}
    events = log_events(stderr)
    assert len(named(events, "file_ignored")) == 0, "one log line per ignored file"
    (summary,) = named(events, "files_ignored")
    assert summary["files"] == 10_000
    names = [e.get("event") for e in events]
    assert names.index("file_loaded") < names.index("files_ignored"), "the routed file waited"
    assert (
        scalar(migrated_url, "SELECT count(*) FROM ops.raw_ingest_manifest WHERE status = 'ignored'")
        == 10_000
    )
    status = json.loads(run_cli(["status", "--json"], migrated_url).stdout)
    note = next(f for f in status["files"] if f["path"] == "notes/notes_00000.csv")
    assert note["status"] == "ignored" and "no route" in note["reason"]


def test_the_daemon_loads_a_routed_file_before_ten_thousand_ignored_ones(
    tmp_path: Path, migrated_url: str
) -> None:
    lake = tmp_path / "lake"
    make_ignored_heap(lake)
    write_csv(lake / "sleepDay_merged.csv", SLEEP_HEADER, ["1503960366,4/12/2016 12:00:00 AM,1,327,346"])
    with DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True) as daemon:
        daemon.wait_ready(timeout=180)
        wait_until(
            lambda: named(log_events(daemon.log_text()), "files_ignored"), timeout=60, message="ignored"
        )
        drop_daily(lake, "dailyActivity_after.csv")
        wait_until(lambda: daily_rows_loaded(migrated_url) == 3, timeout=60, message="the drop")
        events = log_events(daemon.log_text())
    assert len(named(events, "file_ignored")) == 0
    names = [e.get("event") for e in events]
    assert names.index("file_loaded") < names.index("files_ignored"), "the routed file waited"
    assert sum(e["files"] for e in named(events, "files_ignored")) == 10_000
    assert manifest_status(migrated_url)["sleepDay_merged.csv"] == "loaded"


# -- item 10: the landing zone replaced under its name --------------------------------------------


def test_a_replaced_landing_zone_is_watched_anew(tmp_path: Path, migrated_url: str) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    args = ["--reconcile-interval", "0"]  # no backstop scans: only events can load a drop
    with DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True, extra_args=args) as daemon:
        daemon.wait_ready()
        drop_daily(lake, "dailyActivity_1.csv", first_id=1000000001)
        wait_until(lambda: daily_rows_loaded(migrated_url) == 3, timeout=30, message="the first drop")
        lake.rename(tmp_path / "lake.old")
        lake.mkdir()
        write_csv(lake / "sleepDay_waiting.csv", SLEEP_HEADER, ["1503960366,4/12/2016 12:00:00 AM,1,327,346"])
        wait_until(
            lambda: manifest_status(migrated_url).get("sleepDay_waiting.csv") == "loaded",
            timeout=30,
            message="the file waiting in the new folder (found by the rescan)",
        )
        drop_daily(lake, "dailyActivity_2.csv", first_id=1000000002)
        wait_until(
            lambda: daily_rows_loaded(migrated_url) == 6, timeout=30, message="a drop into the new folder"
        )
        health = daemon.get("/healthz")
        events = log_events(daemon.log_text())
    assert (health[0], health[1].strip()) == (200, "ok (inotify)"), health
    assert len(named(events, "landing_zone_replaced")) == 1
    assert finished_runs(migrated_url)[-1]["trigger"] == "event", "the last drop came by a file event"


# -- item 14: SIGHUP ------------------------------------------------------------------------------


def postgres_processes_of(pgdata: Path) -> list[int]:
    """Processes whose command line names ``pgdata`` (the embedded server's postmaster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(pgdata).encode() in cmdline and b"postgres" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def embedded_pgdata(tmp_path: Path) -> Iterator[Path]:
    """A data folder for the program's own embedded server; its server is stopped afterwards
    whatever happened (a test that fails may leave it running)."""
    pgdata = tmp_path / "pgdata"
    yield pgdata
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # the postmaster's fast shutdown
        wait_until(
            lambda: not postgres_processes_of(pgdata), timeout=60, message="the leftover server's exit"
        )


def test_sighup_stops_the_daemon_cleanly_and_its_embedded_server(
    tmp_path: Path, embedded_pgdata: Path
) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    daemon = DaemonProcess(
        lake, "", tmp_path / "daemon.log", no_dbt=True, extra_args=["--pgdata", str(embedded_pgdata)]
    )
    daemon.env = cli_env(None)
    with daemon:
        daemon.wait_ready(timeout=180)
        assert postgres_processes_of(embedded_pgdata), "the embedded server runs"
        daemon.signal(signal.SIGHUP)
        code = daemon.wait_exit(60)
        events = log_events(daemon.log_text())
    assert code == 0, daemon.log_tail()
    assert [e.get("signal") for e in named(events, "shutdown_requested")] == ["SIGHUP"]
    assert named(events, "daemon_stopped")
    assert not postgres_processes_of(embedded_pgdata), "the embedded server was left running"


def test_sighup_stops_a_one_shot_pass_and_its_embedded_server(tmp_path: Path, embedded_pgdata: Path) -> None:
    from tests.helpers import write_big_daily

    lake = tmp_path / "lake"
    write_big_daily(lake / "dailyActivity_big.csv", 400_000)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "watcher", "watch", "--once", "--no-dbt",
            "--data-dir", str(lake), "--pgdata", str(embedded_pgdata),
        ],
        env=cli_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: postgres_processes_of(embedded_pgdata), timeout=180, message="the embedded server")
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, err[-2000:]
    assert not postgres_processes_of(embedded_pgdata), "the embedded server was left running"


# -- item 15: nothing is written into the landing zone; lost events switch to polling -------------


def tree_snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root``: kind and modification time (a folder's changes with its entries)."""
    snapshot = {".": ("dir", root.stat().st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            kind = "dir" if name in dirnames else "file"
            snapshot[path.relative_to(root).as_posix()] = (kind, path.lstat().st_mtime_ns)
    return snapshot


def test_the_daemon_writes_nothing_into_the_landing_zone(tmp_path: Path, migrated_url: str) -> None:
    lake = tmp_path / "lake"
    write_csv(lake / "a" / "dailyActivity_1.csv", DAILY_HEADER, daily_rows(1, 3, first_id=1000000001))
    write_csv(lake / "sleepDay_merged.csv", SLEEP_HEADER, ["1503960366,4/12/2016 12:00:00 AM,1,327,346"])
    (lake / "notes.txt").write_text("ignored\n")
    before = tree_snapshot(lake)
    with DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True) as daemon:
        daemon.wait_ready()
        wait_until(lambda: daily_rows_loaded(migrated_url) == 3, timeout=30, message="the backlog")
        health = daemon.get("/healthz")
    assert (health[0], health[1].strip()) == (200, "ok (inotify)"), health
    assert tree_snapshot(lake) == before


def test_events_that_arrive_keep_the_daemon_on_inotify(tmp_path: Path, migrated_url: str) -> None:
    """No false alarm from the event check: drops, renames into place, a rejected file and a
    chmod, judged by a dozen scans, past the grace period."""
    lake = tmp_path / "lake"
    lake.mkdir()
    args = ["--reconcile-interval", "1"]
    with DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True, extra_args=args) as daemon:
        daemon.wait_ready()
        drop_daily(lake, "dailyActivity_1.csv", first_id=1000000001)
        write_csv(lake / "sub" / "dailyActivity_bad.csv", "Id,Foo", ["1,2"])
        wait_until(lambda: daily_rows_loaded(migrated_url) == 3, timeout=30, message="the drop")
        (lake / "dailyActivity_1.csv").chmod(0o600)
        drop_daily(lake, "sub/dailyActivity_2.csv", first_id=1000000002)
        wait_until(lambda: daily_rows_loaded(migrated_url) == 6, timeout=30, message="the second drop")
        time.sleep(EVENT_GRACE_SECONDS + 3)  # past the grace period, a dozen scans
        health = daemon.get("/healthz")
        events = log_events(daemon.log_text())
    assert not named(events, "watcher_fell_back_to_polling"), named(events, "watcher_fell_back_to_polling")
    assert (health[0], health[1].strip()) == (200, "ok (inotify)"), health


def test_files_no_event_announced_switch_the_daemon_to_polling(tmp_path: Path, migrated_url: str) -> None:
    """Events that do not arrive, for real: a folder mounted into the lake after the watch began.

    The daemon runs in a mount namespace of its own; once it watches, another folder is bound
    onto ``lake/sub`` there. The watch stays on the folder underneath, so what is written into
    the bound folder raises no event, while the daemon's scans see it.
    """
    lake, outside = tmp_path / "lake", tmp_path / "elsewhere"
    (lake / "sub").mkdir(parents=True)
    outside.mkdir()
    args = ["--reconcile-interval", "2"]
    daemon = DaemonProcess(lake, migrated_url, tmp_path / "daemon.log", no_dbt=True, extra_args=args)
    daemon.args = ["unshare", "--mount", "--propagation", "private", "--", *daemon.args]
    with daemon:
        daemon.wait_ready()
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(daemon.pid),
                "-m",
                "--",
                "mount",
                "--bind",
                str(outside),
                str(lake / "sub"),
            ],
            check=True,
        )
        drop_daily(outside, "dailyActivity_unannounced.csv", first_id=1000000001)
        wait_until(lambda: daily_rows_loaded(migrated_url) == 3, timeout=60, message="the backstop scan")
        wait_until(
            lambda: named(log_events(daemon.log_text()), "watcher_fell_back_to_polling"),
            timeout=60,
            message="the switch to polling",
        )
        health = daemon.get("/healthz")
        backend = daemon.metric("wearable_watcher_backend", backend="polling")
        drop_daily(outside, "dailyActivity_polled.csv", first_id=1000000002)
        wait_until(lambda: daily_rows_loaded(migrated_url) == 6, timeout=60, message="a drop seen by polling")
        (switch,) = named(log_events(daemon.log_text()), "watcher_fell_back_to_polling")
    assert (health[0], health[1].strip()) == (200, "ok (polling)"), health
    assert backend == 1
    assert (
        "no file event announced" in switch["reason"]
        and "sub/dailyActivity_unannounced.csv" in switch["reason"]
    )
