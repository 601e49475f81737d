"""The seam between the landing zone and the pipeline: candidates, their versions, and readers.

A landing zone is a folder or a bucket. Either one lists ``Candidate`` entries, tells the
``Version`` of an entry without reading it (a change hint: never the file's identity, which is
its relative name plus the sha256 of its bytes), and opens a byte stream on it. The loader,
the manifest and the pipeline only ever see these three things.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import BinaryIO, Protocol

from watcher.loader import open_for_reading


@dataclass(frozen=True)
class Version:
    """What the zone says of an entry without reading it. Equal versions: the same content, as far
    as a listing can tell; a different version is only a reason to read the entry again.

    The fields are named as ``os.stat_result``'s, so that the manifest's hint (size, modification
    time, mode) reads the same for a file and an object.
    """

    st_size: int
    st_mtime_ns: int
    """A file's modification time; an object's ``Last-Modified`` (whole seconds on S3)."""
    st_mode: int = stat.S_IFREG | 0o444
    etag: str | None = None
    """An object's ETag: a change hint only (a multipart upload's ETag is no content hash)."""
    st_ctime: float = 0.0
    """A file's status change time (the folder's event check); an object's ``Last-Modified``."""


class EntryReader(Protocol):
    """Reads one entry of a landing zone."""

    def stat(self, candidate: Candidate) -> Version:
        """The entry's version now; FileNotFoundError when it is gone, OSError when unreadable."""
        ...

    def open(self, candidate: Candidate) -> BinaryIO:
        """A byte stream on the entry (``readline``, ``read`` and ``seek(0)``); FileProblem when
        it cannot be read as a file."""
        ...


class LandingZone(EntryReader, Protocol):
    """A folder or a bucket: list candidates with their version hints, open them, notice changes."""

    url: str
    """What the logs name: the folder's absolute path, or the bucket URL."""
    settles: bool
    """True: an entry may still be written when it is seen (a folder), so it must settle first.
    False: an entry is complete once it is visible (an object: a PUT is atomic)."""

    def exists(self) -> str | None:
        """None when the zone can be listed; else why not, in words a person can act on."""
        ...

    def scan(self) -> Iterator[Candidate]:
        """Every candidate in the zone, in a stable order."""
        ...

    def candidate(self, relative: str) -> Candidate:
        """The entry of this relative name (say, for ``reprocess``), whether or not it exists."""
        ...


class ChangeSource(Protocol):
    """Notices the new and changed entries of a zone whose entries need no settling (a bucket).

    The bucket's listing poller is one; a queue fed by the bucket's event notifications (SQS,
    Pub/Sub, Event Grid) would be another, its ``poll`` returning the entries its messages name,
    with the full listing kept as the backstop.
    """

    def poll(self, *, full: bool) -> list[Candidate]:
        """Entries new or changed since the last poll; ``full``: look at every entry again."""
        ...

    def remember(self, candidates: Iterable[Candidate]) -> None:
        """These entries are in the manifest in the version polled: no need to look again."""
        ...

    def retract(self) -> None:
        """The last poll's entries could not be queued: the next poll returns them again."""
        ...


class LocalFiles:
    """Reads files by their absolute path: the folder's side of the seam."""

    def stat(self, candidate: Candidate) -> Version:
        info = os.stat(candidate.path)
        return Version(info.st_size, info.st_mtime_ns, info.st_mode, None, info.st_ctime)

    def open(self, candidate: Candidate) -> BinaryIO:
        return open_for_reading(Path(candidate.path))


LOCAL_FILES = LocalFiles()


@dataclass(frozen=True)
class Candidate:
    path: PurePath
    """Where the entry is: a file's absolute path as found (a link is not resolved here), or an
    object's full key in its bucket."""
    relative: str
    """Path relative to the landing zone, with forward slashes: the file's identity."""
    problem: str | None = None
    """Why the entry cannot be read as a file, or None when it can."""
    version: Version | None = field(default=None, compare=False)
    """The version a listing gave with the entry (a bucket's), None when none came with it."""
    reader: EntryReader = field(default=LOCAL_FILES, compare=False, repr=False)

    def stat(self) -> Version:
        """The entry's version now (FileNotFoundError when it is gone)."""
        return self.reader.stat(self)

    def hint(self) -> Version:
        """The version the listing gave, else the entry's version now."""
        return self.version if self.version is not None else self.stat()

    def open(self) -> BinaryIO:
        return self.reader.open(self)
