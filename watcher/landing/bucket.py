"""The landing zone as a bucket (``s3://``, ``gs://``, ``az://``), through obstore.

An object is complete once it is visible (a PUT is atomic): nothing settles. A candidate's
identity is its key relative to the prefix; its ``Version`` (size, Last-Modified, ETag) comes
with the listing and is a change hint only. Credentials, region and endpoint come from each
cloud's standard variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``...), read by obstore itself, which also knows the roles of a pod or a task.

Changes are noticed by listing (``BucketPoller``): between two full listings, a poll lists only
the keys after the last one seen (one request when nothing is new). An event source (say, a
queue fed by the bucket's notifications) would be another poller: candidates in, same pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

import obstore
from obstore.store import ObjectStore, from_url

from watcher.errortext import first_line
from watcher.landing.objectstream import open_object
from watcher.landing.scanner import is_ignored_name
from watcher.landing.zone import Candidate, Version
from watcher.loader import FileProblem

if TYPE_CHECKING:
    from obstore import ObjectMeta

SCHEMES = ("s3", "gs", "az")
LIST_CHUNK = 1000


def is_bucket_url(value: str) -> bool:
    scheme, sep, _ = value.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def mtime_ns(moment: datetime) -> int:
    """A Last-Modified time in whole nanoseconds (exact: no float on the way)."""
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def entity_tag(etag: str | None) -> str | None:
    """An ETag in its quoted HTTP form. Azure and GCS list it bare and give it quoted on a HEAD
    (S3 quotes it in both): one form, so that a version listed and the same version read by a HEAD
    compare equal in the manifest. A quoted tag is what ``If-Match`` takes on each cloud."""
    if etag is None or etag.startswith(('"', 'W/"')):
        return etag
    return f'"{etag}"'


class BucketZone:
    settles = False

    def __init__(self, url: str, *, allow_http: bool = False, store: ObjectStore | None = None) -> None:
        self.url = url
        self.store = store or from_url(
            url,
            client_options={
                "allow_http": allow_http,
                "connect_timeout": "10s",
                "read_timeout": "60s",  # a stalled read fails; a long one does not
                "timeout": "24h",  # the whole GET of a large object streaming into COPY
            },
            # A request that fails on a connection or a 5xx is tried again for 30 s at most (the
            # client's default, 3 minutes, would hold a start or a pass that long).
            retry_config={"max_retries": 5, "retry_timeout": timedelta(seconds=30)},
        )
        prefix = getattr(self.store, "prefix", None)  # the URL's path, as the store parsed it
        self.prefix = PurePosixPath(str(prefix)) if prefix else None

    def key(self, relative: str) -> PurePosixPath:
        return self.prefix / relative if self.prefix else PurePosixPath(relative)

    def exists(self) -> str | None:
        try:
            for _ in obstore.list(self.store, chunk_size=1):
                break
        except Exception as exc:
            return f"the bucket {self.url} cannot be listed: {first_line(exc)}"
        return None

    def scan(self, after: str | None = None) -> Iterator[Candidate]:
        """The objects under the prefix in key order; with ``after``, only those whose relative key
        sorts after it. Hidden and temporary names (in any part of the key) are left out, and so
        are folder markers (keys ending in ``/``)."""
        try:
            chunks = list_chunks(self.store, after)
            for chunk in chunks:
                yield from self._candidates(chunk)
        except OSError:
            raise
        except Exception as exc:  # obstore's own errors: unreachable, denied, no such bucket
            raise OSError(f"the bucket {self.url} cannot be listed: {first_line(exc)}") from exc

    def _candidates(self, chunk: Iterable[ObjectMeta]) -> Iterator[Candidate]:
        for meta in chunk:
            relative = meta["path"]
            if relative.endswith("/") or any(is_ignored_name(p) for p in relative.split("/")):
                continue
            version = Version(
                meta["size"],
                mtime_ns(meta["last_modified"]),
                etag=entity_tag(meta["e_tag"]),
                st_ctime=meta["last_modified"].timestamp(),
            )
            yield Candidate(self.key(relative), relative, None, version, self)

    def candidate(self, relative: str) -> Candidate:
        return Candidate(self.key(relative), relative, None, None, self)

    def stat(self, candidate: Candidate) -> Version:
        """The version a listing gave is the version read: ``open`` asks for that ETag (If-Match),
        so the bytes are that version's or the read fails as a changed object. One GET per object
        then, instead of a HEAD before and after it. Without a listed version (``reprocess``), a
        HEAD."""
        if candidate.version is not None and candidate.version.etag is not None:
            return candidate.version
        try:
            meta = obstore.head(self.store, candidate.relative)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise OSError(f"the object's metadata could not be read: {first_line(exc)}") from exc
        return Version(
            meta["size"],
            mtime_ns(meta["last_modified"]),
            etag=entity_tag(meta["e_tag"]),
            st_ctime=meta["last_modified"].timestamp(),
        )

    def open(self, candidate: Candidate) -> BinaryIO:
        try:
            etag = candidate.version.etag if candidate.version is not None else None
            return open_object(self.store, candidate.relative, etag)
        except FileNotFoundError as exc:
            raise FileProblem("the object disappeared before it could be read", status="failed") from exc
        except OSError:
            raise
        except Exception as exc:
            raise OSError(f"the object could not be read: {first_line(exc)}") from exc


class BucketPoller:
    """Notices new and changed objects by listing, and remembers what needs no second look.

    ``known`` holds the version of every object the manifest already has in that version: such
    an object costs nothing at the next listing, not even a database query. A poll between two
    full listings asks only for keys after the last key seen (exports named by date, or put
    under a new dated folder, sort last: one request finds them); a full listing (at start and
    every reconcile interval) finds the rest: an overwrite, a key that sorts earlier, an object
    another instance was loading when it stopped.
    """

    def __init__(self, zone: BucketZone) -> None:
        self.zone = zone
        self.known: dict[str, Version] = {}
        self.last_key: str | None = None
        self._key_before: str | None = None

    def poll(self, *, full: bool) -> list[Candidate]:
        """The objects that are new or changed since this process last looked."""
        self._key_before = self.last_key
        listed = list(self.zone.scan(None if full else self.last_key))
        if listed:
            self.last_key = max(self.last_key or "", listed[-1].relative)
        if full:
            present = {c.relative for c in listed}
            self.known = {k: v for k, v in self.known.items() if k in present}
        return [c for c in listed if self.known.get(c.relative) != c.version]

    def retract(self) -> None:
        self.last_key = self._key_before

    def remember(self, candidates: Iterable[Candidate]) -> None:
        """These objects are in the manifest in the version listed: no need to look again."""
        for candidate in candidates:
            if candidate.version is not None:
                self.known[candidate.relative] = candidate.version


def list_chunks(store: ObjectStore, after: str | None) -> Iterator[Sequence[ObjectMeta]]:
    return iter(obstore.list(store, offset=after, chunk_size=LIST_CHUNK))
