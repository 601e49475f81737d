"""The landing zone as a folder: the scanner lists it, files are read by their path.

Noticing changes is the observer's job (file events, else polling) and settling the
readiness rules' (a file may still be written when it is first seen).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from watcher.landing.scanner import inspect_entry, scan
from watcher.landing.zone import Candidate, LocalFiles


class FolderZone(LocalFiles):
    settles = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = str(folder)

    def exists(self) -> str | None:
        return None if self.folder.is_dir() else f"the data directory does not exist: {self.folder}"

    def scan(self) -> Iterator[Candidate]:
        return scan(self.folder)

    def candidate(self, relative: str) -> Candidate:
        return inspect_entry(self.folder, self.folder / relative)
