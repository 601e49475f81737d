"""The watchdog observer on the landing zone: OS events when they arrive, else polling.

Choice of backend, in order:

1. ``--polling`` (or ``WEARABLE_POLLING``): polling.
2. The landing zone is on a network or virtual file system (NFS, SMB, 9p, virtiofs, FUSE, the
   Docker Desktop bind mounts): polling. Events of such a mount report only what this machine
   wrote, never what another machine or the host did, so a self-test cannot prove them.
3. Otherwise the native observer (inotify on Linux) starts, and a canary checks it: a file is
   written in the hidden folder ``.wearable-canary/`` of the landing zone and its event must
   arrive within a few seconds; if not, polling. When the canary cannot be written (a read-only
   mount) the native observer is kept: on a local file system of a Linux kernel, inotify reports
   every writer on that kernel, including the host's writes into a bind mount.

The handler only records observations into the ``Tracker``; it never touches the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from watcher.readiness import EventKind, Tracker
from watcher.scanner import has_ignored_part

log = structlog.get_logger(__name__)

CANARY_DIR = ".wearable-canary"
CANARY_TIMEOUT_SECONDS = 3.0
EVENT_TYPES: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
]
"""Opens and reads (ours included) are not asked for: reading a file never wakes the daemon."""

REMOTE_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "virtiofs", "fakeowner", "vboxsf",
        "ceph", "glusterfs", "afs", "lustre", "gpfs", "davfs", "ncpfs", "prl_fs", "vmhgfs",
    }
)  # fmt: skip


class CanaryProbe:
    """Recognises the event of the canary file the daemon wrote."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.seen = threading.Event()

    def check(self, path: str) -> None:
        if self.path is not None and path == self.path:
            self.seen.set()


class LandingHandler(FileSystemEventHandler):
    """Turns watchdog events into tracker observations; hidden and temporary names are ignored."""

    def __init__(self, data_dir: Path, tracker: Tracker, canary: CanaryProbe) -> None:
        self.data_dir = data_dir
        self.tracker = tracker
        self.canary = canary

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._record(event)
        except Exception as exc:  # the observer thread must survive anything
            log.error("watch_event_not_recorded", error=type(exc).__name__, detail=str(exc)[:300])

    def _record(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        src = os.fsdecode(event.src_path)
        self.canary.check(src)
        if isinstance(event, FileMovedEvent):
            if self._relevant(src):
                self.tracker.forget(src)
            dest = os.fsdecode(event.dest_path)
            if dest and self._relevant(dest):
                self.tracker.observe(dest, "moved_in")
            return
        if not self._relevant(src):
            return
        if isinstance(event, FileDeletedEvent):
            self.tracker.forget(src)
            return
        kind: EventKind
        if isinstance(event, FileClosedEvent):
            kind = "closed"
        elif isinstance(event, FileCreatedEvent):
            kind = "created"
        elif isinstance(event, FileModifiedEvent):
            kind = "modified"
        else:
            return
        self.tracker.observe(src, kind)

    def _relevant(self, path: str) -> bool:
        try:
            relative = Path(path).relative_to(self.data_dir)
        except ValueError:
            return False
        return bool(relative.parts) and not has_ignored_part(relative)


class Watcher:
    """A running observer, the name of its backend and why it was chosen."""

    def __init__(self, observer: BaseObserver, backend: str, reason: str) -> None:
        self.observer = observer
        self.backend = backend
        self.reason = reason

    @property
    def polling(self) -> bool:
        return self.backend == "polling"

    def alive(self) -> bool:
        """The observer thread and every emitter thread still run."""
        return self.observer.is_alive() and all(e.is_alive() for e in self.observer.emitters)

    def stop(self, timeout: float = 3.0) -> None:
        with contextlib.suppress(Exception):
            self.observer.stop()
            self.observer.join(timeout)


def filesystem_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the file system holding ``path`` (Linux), or None when unknown."""
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, best_type = "", None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        mount_point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right.split()[0]
    return best_type


def is_remote(fs_type: str | None) -> bool:
    return fs_type is not None and (fs_type in REMOTE_FILESYSTEMS or fs_type.startswith("fuse"))


def native_backend_name(observer: BaseObserver) -> str:
    if sys.platform.startswith("linux"):
        return "inotify"
    return type(observer).__name__.removesuffix("Observer").lower() or "native"


def start_watcher(
    data_dir: Path,
    tracker: Tracker,
    *,
    force_polling: bool,
    polling_interval: float,
    canary_timeout: float = CANARY_TIMEOUT_SECONDS,
) -> Watcher:
    """Start the observer the rules above choose; the caller stops it."""
    canary = CanaryProbe()
    handler = LandingHandler(data_dir, tracker, canary)
    if force_polling:
        return _polling(data_dir, handler, polling_interval, "polling was asked for (--polling)")
    fs_type = filesystem_type(data_dir)
    if is_remote(fs_type):
        reason = f"the landing zone is on {fs_type}: file events from other machines are not reported"
        return _polling(data_dir, handler, polling_interval, reason)
    canary_dir = data_dir / CANARY_DIR
    try:
        canary_dir.mkdir(exist_ok=True)  # before the watch: its own watch is then in place
        writable = True
    except OSError:
        writable = False
    try:
        observer = Observer()
        observer.schedule(handler, str(data_dir), recursive=True, event_filter=EVENT_TYPES)
        observer.start()
    except OSError as exc:
        _remove_canary_dir(canary_dir)
        return _polling(data_dir, handler, polling_interval, f"file events could not start: {exc}")
    name = native_backend_name(observer)
    if not writable:
        log.info("event_check_skipped", reason="the landing zone is not writable", fs_type=fs_type)
        return Watcher(observer, name, f"local file system ({fs_type}); canary not writable")
    if _canary_arrives(canary_dir, canary, canary_timeout):
        return Watcher(observer, name, f"canary event received ({fs_type or 'unknown file system'})")
    with contextlib.suppress(Exception):
        observer.stop()
        observer.join(3.0)
    reason = f"no event arrived for the canary within {canary_timeout:g} s"
    return _polling(data_dir, handler, polling_interval, reason)


def _canary_arrives(canary_dir: Path, canary: CanaryProbe, timeout: float) -> bool:
    probe = canary_dir / f"probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    canary.path = str(probe)
    try:
        probe.write_bytes(b"canary\n")
    except OSError as exc:
        log.info("event_check_skipped", reason=f"canary not writable: {exc}")
        _remove_canary_dir(canary_dir)
        return True
    try:
        return canary.seen.wait(timeout)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
        _remove_canary_dir(canary_dir)


def _remove_canary_dir(canary_dir: Path) -> None:
    with contextlib.suppress(OSError):  # another instance may have its probe in it
        canary_dir.rmdir()


def _polling(data_dir: Path, handler: LandingHandler, interval: float, reason: str) -> Watcher:
    observer = PollingObserver(timeout=interval)
    observer.schedule(handler, str(data_dir), recursive=True, event_filter=EVENT_TYPES)
    observer.start()
    return Watcher(observer, "polling", reason)


class OverflowListener(logging.Handler):
    """Calls back when watchdog reports a kernel event queue overflow (events were lost)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            if "overflow" in record.getMessage().lower():
                self.callback()


def listen_for_overflow(callback: Callable[[], None]) -> OverflowListener:
    listener = OverflowListener(callback)
    logging.getLogger("watchdog.observers").addHandler(listener)
    return listener


def stop_listening(listener: OverflowListener) -> None:
    logging.getLogger("watchdog.observers").removeHandler(listener)
