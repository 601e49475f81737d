"""List candidate files under the landing zone.

Hidden and temporary names are never considered. Nothing is followed out of the landing zone:
a link whose target lies outside it is reported as a problem, not read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

TEMPORARY_PATTERNS = (".*", "*.part", "*.tmp", "*.swp", "~*", "*~", "*.crdownload")


def is_ignored_name(name: str) -> bool:
    """Hidden or temporary names that a writer is still working on, or that are not data."""
    return any(fnmatch(name, pattern) for pattern in TEMPORARY_PATTERNS)


def has_ignored_part(relative: Path) -> bool:
    return any(is_ignored_name(part) for part in relative.parts)


@dataclass(frozen=True)
class Candidate:
    path: Path
    """Absolute path of the file as found (a link is not resolved here)."""
    relative: str
    """Path relative to the landing zone, with forward slashes: the file's identity."""
    problem: str | None = None
    """Why the entry cannot be read as a file, or None when it can."""


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


def scan(data_dir: Path) -> Iterator[Candidate]:
    """Every candidate under the landing zone, in a stable order, recursively.

    Directories are descended into, except hidden ones and links to directories; a directory
    whose name looks like a data file (``x.csv/``) is reported so that the user hears of it.
    """
    data_dir = data_dir.resolve()
    for root, dirs, files in os.walk(data_dir, followlinks=False):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not is_ignored_name(d))
        for name in sorted(files):
            if not is_ignored_name(name):
                yield inspect_entry(data_dir, root_path / name)
        for name in dirs:
            full = root_path / name
            if name.lower().endswith(".csv") or os.path.islink(full):
                yield inspect_entry(data_dir, full)
