"""List candidate files under the landing zone.

Hidden and temporary names are never considered. Nothing is followed out of the landing zone:
a link whose target lies outside it is reported as a problem, not read. Nothing is skipped in
silence either: a folder that cannot be entered, and a path longer than the system allows, are
reported as problems too (the files inside cannot even be listed).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import structlog

from watcher.landing.zone import Candidate

log = structlog.get_logger(__name__)

PATH_TOO_LONG_REASON = (
    "the path is longer than the system allows (PATH_MAX, 4096 bytes, or a name over 255 bytes);"
    " what is inside cannot be read: move it to a shorter path"
)
FOLDER_DENIED_REASON = (
    "a folder that cannot be entered (permission denied); its files cannot be listed:"
    " give the pipeline's user read and execute rights on it"
)

TEMPORARY_PATTERNS = (".*", "*.part", "*.tmp", "*.swp", "~*", "*~", "*.crdownload")


def is_ignored_name(name: str) -> bool:
    """Hidden or temporary names that a writer is still working on, or that are not data."""
    return any(fnmatch(name, pattern) for pattern in TEMPORARY_PATTERNS)


def has_ignored_part(relative: Path) -> bool:
    return any(is_ignored_name(part) for part in relative.parts)


def relative_name(data_dir: Path, path: Path) -> str:
    return path.relative_to(data_dir).as_posix()


def inspect_entry(data_dir: Path, path: Path) -> Candidate:
    """Classify one path under the landing zone without reading it."""
    relative = relative_name(data_dir, path)
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name: it could not even be recorded
        shown = os.fsencode(relative).decode("utf-8", errors="backslashreplace")
        return Candidate(path, shown, "the file name is not valid UTF-8; rename the file")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Candidate(path, relative, "the file disappeared before it could be read")
    except OSError as exc:  # a path over PATH_MAX, a folder on the way that cannot be entered
        return Candidate(path, relative, problem_of(exc))
    if stat.S_ISLNK(info.st_mode):
        try:
            target = path.resolve()
        except (OSError, RuntimeError):  # a loop of links
            return Candidate(path, relative, "a link that cannot be followed (a loop of links?)")
        if not target.is_relative_to(data_dir.resolve()):
            return Candidate(path, relative, "a link that leads outside the data lake; not followed")
        if not target.is_file():
            return Candidate(path, relative, "a link that does not lead to a regular file")
        return Candidate(path, relative)
    if stat.S_ISDIR(info.st_mode):
        return Candidate(path, relative, "a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        return Candidate(path, relative, "not a regular file (device, socket or pipe)")
    return Candidate(path, relative)


def problem_of(exc: OSError) -> str:
    """The reason recorded for an entry the system refused to list or examine."""
    if exc.errno == errno.ENAMETOOLONG:
        return PATH_TOO_LONG_REASON
    if exc.errno in (errno.EACCES, errno.EPERM):
        return FOLDER_DENIED_REASON
    return f"a folder that cannot be read: {exc.strerror or exc}"


def scan(data_dir: Path) -> Iterator[Candidate]:
    """Every candidate under the landing zone, in a stable order, recursively.

    Directories are descended into, except hidden ones and links to directories; a directory
    whose name looks like a data file (``x.csv/``) is reported so that the user hears of it, and
    so is a directory that cannot be listed (no permission, a path over the system's limit).
    """
    data_dir = data_dir.resolve()
    refused: list[OSError] = []
    for root, dirs, files in os.walk(data_dir, onerror=refused.append, followlinks=False):
        yield from _refused(data_dir, refused)
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not is_ignored_name(d))
        for name in sorted(files):
            if not is_ignored_name(name):
                yield inspect_entry(data_dir, root_path / name)
        for name in dirs:
            full = root_path / name
            if name.lower().endswith(".csv") or os.path.islink(full):
                yield inspect_entry(data_dir, full)
    yield from _refused(data_dir, refused)


def _refused(data_dir: Path, errors: list[OSError]) -> Iterator[Candidate]:
    """The folders ``os.walk`` could not list, as problems (the landing zone itself excepted:
    the caller finds out about it on its own)."""
    while errors:
        exc = errors.pop(0)
        if exc.filename is None or exc.errno in (errno.ENOENT, errno.ENOTDIR):
            continue  # removed while the scan ran: nothing to report
        path = Path(os.fsdecode(exc.filename))
        if path == data_dir:
            log.warning("landing_zone_unreadable", error=exc.strerror or str(exc))
            continue
        relative = relative_name(data_dir, path)
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            relative = os.fsencode(relative).decode("utf-8", errors="backslashreplace")
        yield Candidate(path, relative, problem_of(exc))
