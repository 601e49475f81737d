"""A database outage while the daemon runs: it keeps going, keeps the file pending, loads it later."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.daemon_helpers import DaemonProcess, TcpProxy, daily_rows_loaded, drop_daily, wait_until

pytestmark = pytest.mark.timeout(120)


def test_a_database_outage_defers_the_batch_and_the_daemon_carries_on(
    tmp_path: Path, migrated_url: str
) -> None:
    params = conninfo_to_dict(migrated_url)
    proxy = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)).start()
    lake = tmp_path / "lake"
    lake.mkdir()
    daemon = DaemonProcess(
        lake,
        proxy.with_port(migrated_url),
        tmp_path / "daemon.log",
        no_dbt=True,
        extra_env={"WEARABLE_RETRY_SECONDS": "1"},
    )
    try:
        daemon.start().wait_ready()
        proxy.cut()
        wait_until(lambda: daemon.get("/readyz")[0] == 503, timeout=20, message="/readyz to say 503")
        drop_daily(lake, "dailyActivity_during_outage.csv", days=4)
        wait_until(lambda: "batch_deferred" in daemon.log_text(), timeout=30, message="a deferred batch")
        assert daemon.poll() is None, daemon.log_tail()
        assert daemon.get("/healthz")[0] == 200
        assert daemon.metric("wearable_files_pending") >= 1
        assert daemon.metric("wearable_database_up") == 0
        proxy.restore()
        wait_until(lambda: daily_rows_loaded(migrated_url) == 4, timeout=60, message="the deferred load")
        wait_until(lambda: daemon.get("/readyz")[0] == 200, timeout=20, message="/readyz to recover")
        assert daemon.metric("wearable_files_pending") == 0
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(15) == 0
    finally:
        daemon.stop()
        proxy.close()


def test_sigterm_while_retrying_the_database_exits_promptly(tmp_path: Path, migrated_url: str) -> None:
    """Retries (a minute by default) end early on a stop: the 10 s exit holds during an outage."""
    params = conninfo_to_dict(migrated_url)
    proxy = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)).start()
    lake = tmp_path / "lake"
    lake.mkdir()
    daemon = DaemonProcess(lake, proxy.with_port(migrated_url), tmp_path / "daemon.log", no_dbt=True)
    try:
        daemon.start().wait_ready()
        proxy.cut()
        drop_daily(lake, "dailyActivity_stuck.csv")
        wait_until(lambda: "transient_fault_retrying" in daemon.log_text(), timeout=30, message="retries")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(10) == 0
    finally:
        daemon.stop()
        proxy.close()
    assert daily_rows_loaded(migrated_url) == 0
