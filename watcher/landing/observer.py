"""The watchdog observer on the landing zone: OS events when they arrive, else polling.

Choice of backend, in order:

1. ``--polling`` (or ``WEARABLE_POLLING``): polling.
2. The landing zone is on a network or virtual file system (NFS, SMB, 9p, virtiofs, FUSE, the
   Docker Desktop bind mounts): polling. Events of such a mount report only what this machine
   wrote, never what another machine or the host did.
3. Otherwise the native observer (inotify on Linux). Nothing is written into the landing zone to
   test it: the backstop scan checks it instead. A file the scan finds that changed after the
   previous scan began, long enough ago for its event to have arrived, and that no event
   announced, shows that events do not arrive from this folder (``unannounced``): the daemon
   then switches to polling and says so.

The handler only records observations into the ``Tracker`` (and which paths events announced,
for that check); it never touches the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog
from watchdog.events import (
    FileAttribEvent,
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

from watcher.landing.readiness import EventKind, Tracker
from watcher.landing.scanner import has_ignored_part

log = structlog.get_logger(__name__)

EVENT_TYPES: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileAttribEvent,
]
"""Opens and reads (ours included) are not asked for: reading a file never wakes the daemon.
Attribute changes (chmod, touch) only count as announced, for the backstop's event check."""

EVENT_GRACE_SECONDS = 10.0
"""How long after a change its event is surely in (a busy machine delays the observer thread):
younger changes are judged by the event check at a later scan."""

REMOTE_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "virtiofs", "fakeowner", "vboxsf",
        "ceph", "glusterfs", "afs", "lustre", "gpfs", "davfs", "ncpfs", "prl_fs", "vmhgfs",
    }
)  # fmt: skip


class Announcements:
    """The paths file events named since the last ``take`` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: set[str] = set()

    def add(self, path: str) -> None:
        with self._lock:
            self._paths.add(path)

    def take(self) -> set[str]:
        with self._lock:
            taken, self._paths = self._paths, set()
        return taken


class EventCheck:
    """Do file events arrive? Judged from what the backstop scan finds, never by writing a probe.

    At each scan the daemon takes the paths events announced since the previous one (an
    ``Announcements``) and hands ``judge`` the files the scan found that it was not already
    tracking, with the time of their last change (``st_ctime``: a write, a rename into place, a
    chmod; a user cannot set it back). A file changed after the previous scan took its
    announcements, at least ``grace`` seconds ago, that no event announced, is proof that events
    do not arrive. A change younger than ``grace`` is judged at the next scan (its event may be on
    its way); a change before the previous take is never judged (its event may have been taken).
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.since: float | None = None
        self.suspects: dict[str, float] = {}

    def restart(self, now: float) -> None:
        """Judge only changes from ``now`` on (a new watch, or events known to be lost)."""
        self.since = now
        self.suspects.clear()

    def judge(self, found: Iterable[tuple[str, float]], announced: set[str], now: float) -> list[str]:
        """The paths no event announced; ``now`` is the wall time just after ``announced`` was taken."""
        since, self.since = self.since, now
        if since is None:
            return []
        candidates = dict(self.suspects)
        candidates.update((path, changed) for path, changed in found if changed >= since)
        self.suspects = {}
        missing = []
        for path, changed in candidates.items():
            if path in announced:
                continue
            if changed <= now - self.grace:
                missing.append(path)
            else:
                self.suspects[path] = changed
        return sorted(missing)


class LandingHandler(FileSystemEventHandler):
    """Turns watchdog events into tracker observations; hidden and temporary names are ignored."""

    def __init__(self, data_dir: Path, tracker: Tracker, announcements: Announcements) -> None:
        self.data_dir = data_dir
        self.tracker = tracker
        self.announcements = announcements

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._record(event)
        except Exception as exc:  # the observer thread must survive anything
            log.error("watch_event_not_recorded", error=type(exc).__name__, detail=str(exc)[:300])

    def _record(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileMovedEvent):
            if self._relevant(src):
                self.tracker.forget(src)
            dest = os.fsdecode(event.dest_path)
            if dest and self._relevant(dest):
                self.announcements.add(dest)
                self.tracker.observe(dest, "moved_in")
            return
        if not self._relevant(src):
            return
        self.announcements.add(src)
        if isinstance(event, FileAttribEvent):
            return  # a chmod or touch: nothing to read, but the path was announced
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

    def __init__(
        self, observer: BaseObserver, backend: str, reason: str, identity: tuple[int, int] | None = None
    ) -> None:
        self.observer = observer
        self.backend = backend
        self.reason = reason
        self.identity = identity
        """(st_dev, st_ino) of the folder watched, taken before the watch began."""

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


def folder_identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a folder, or None when it is gone or not a folder: a folder replaced
    under the same name (``mv lake lake.old; mkdir lake``) has another identity."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def start_watcher(
    data_dir: Path,
    tracker: Tracker,
    *,
    force_polling: bool,
    polling_interval: float,
    announcements: Announcements | None = None,
) -> Watcher:
    """Start the observer the rules above choose; the caller stops it."""
    identity = folder_identity(data_dir)
    handler = LandingHandler(data_dir, tracker, announcements or Announcements())
    if force_polling:
        reason = "polling was asked for (--polling)"
        return _polling(data_dir, handler, polling_interval, reason, identity)
    fs_type = filesystem_type(data_dir)
    if is_remote(fs_type):
        reason = f"the landing zone is on {fs_type}: file events from other machines are not reported"
        return _polling(data_dir, handler, polling_interval, reason, identity)
    try:
        observer = Observer()
        observer.schedule(handler, str(data_dir), recursive=True, event_filter=EVENT_TYPES)
        observer.start()
    except OSError as exc:
        reason = f"file events could not start: {exc}"
        return _polling(data_dir, handler, polling_interval, reason, identity)
    reason = f"local file system ({fs_type or 'unknown type'}); the backstop scan checks that events arrive"
    return Watcher(observer, native_backend_name(observer), reason, identity)


def start_polling(
    data_dir: Path, tracker: Tracker, interval: float, reason: str, announcements: Announcements
) -> Watcher:
    """Polling, whatever the file system (after the event check found events missing)."""
    handler = LandingHandler(data_dir, tracker, announcements)
    return _polling(data_dir, handler, interval, reason, folder_identity(data_dir))


def _polling(
    data_dir: Path,
    handler: LandingHandler,
    interval: float,
    reason: str,
    identity: tuple[int, int] | None,
) -> Watcher:
    observer = PollingObserver(timeout=interval)
    observer.schedule(handler, str(data_dir), recursive=True, event_filter=EVENT_TYPES)
    observer.start()
    return Watcher(observer, "polling", reason, identity)


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
