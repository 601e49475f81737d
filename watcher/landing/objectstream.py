"""An object's bytes as the file-like stream the loader reads (``readline``, ``read``, ``seek(0)``).

The GET streams in chunks of ``CHUNK_BYTES``: memory stays bounded by a chunk and the buffer,
whatever the object's size, and nothing touches the disk. ``seek(0)`` (the checked path reads a
file again from its start) issues a new GET that must match the first one's ETag: the bytes read
the second time are those of the same version, or the read fails as a changed file. Given the
ETag a listing showed, the first GET asks for that version too.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import obstore
from obstore.exceptions import PreconditionError
from obstore.store import ObjectStore

from watcher.errortext import first_line

CHUNK_BYTES = 256 << 10
BUFFER_BYTES = 1 << 20


class ObjectChanged(OSError):
    """The object changed between two reads of one load."""


class ObjectStream(io.RawIOBase):
    """``etag``: the version to read (If-Match); None: the current one, then that one again."""

    def __init__(self, store: ObjectStore, key: str, etag: str | None = None) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._etag = etag
        self._chunks: Iterator[Any] = iter(())
        self._pending = memoryview(b"")
        self._position = 0
        self._start()

    def _start(self) -> None:
        """A GET from the first byte; after the first, only of the same version."""
        try:
            if self._etag is None:
                result = obstore.get(self._store, self._key)
                self._etag = result.meta["e_tag"]
            else:
                result = obstore.get(self._store, self._key, options={"if_match": self._etag})
        except PreconditionError as exc:
            raise ObjectChanged("the object changed while it was being read") from exc
        self._chunks = iter(result.stream(min_chunk_size=CHUNK_BYTES))
        self._pending = memoryview(b"")
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return 0
            except OSError:
                raise
            except Exception as exc:  # the object store's own errors: a connection cut mid-object
                raise OSError(f"the object could not be read: {first_line(exc)}") from exc
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        self._position += size
        return size

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._position + offset
        if whence in (io.SEEK_SET, io.SEEK_CUR) and target == self._position:
            return self._position
        if whence == io.SEEK_SET and offset == 0:
            self._start()
            return 0
        raise io.UnsupportedOperation("an object stream only goes back to its start")


def open_object(store: ObjectStore, key: str, etag: str | None = None) -> io.BufferedReader:
    return io.BufferedReader(ObjectStream(store, key, etag), buffer_size=BUFFER_BYTES)
