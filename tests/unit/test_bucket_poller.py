"""The bucket's listing poller: a cursor between full listings, and no second look at what is known.

A fake zone stands for the listing (pure logic); the real listing is tested against an S3 server
in tests/integration/test_bucket.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from watcher.landing.bucket import BucketPoller
from watcher.landing.zone import Candidate, Version


class FakeListing:
    def __init__(self) -> None:
        self.objects: dict[str, Version] = {}
        self.calls: list[str | None] = []

    def put(self, key: str, size: int, etag: str) -> None:
        self.objects[key] = Version(size, 1_000_000_000, etag=etag)

    def scan(self, after: str | None = None) -> Iterator[Candidate]:
        self.calls.append(after)
        for key in sorted(self.objects):
            if after is None or key > after:
                yield Candidate(PurePosixPath(key), key, None, self.objects[key])


def names(candidates: list[Candidate]) -> list[str]:
    return [c.relative for c in candidates]


def test_a_poll_lists_after_the_last_key_and_a_full_listing_finds_the_rest() -> None:
    listing = FakeListing()
    poller = BucketPoller(listing)  # type: ignore[arg-type]
    listing.put("2016/a.csv", 10, "e1")
    assert names(poller.poll(full=True)) == ["2016/a.csv"]
    listing.put("2017/b.csv", 10, "e2")  # sorts last: the next poll finds it
    listing.put("2015/early.csv", 10, "e3")  # sorts first: only a full listing does
    assert names(poller.poll(full=False)) == ["2017/b.csv"]
    assert listing.calls[-1] == "2016/a.csv"
    assert names(poller.poll(full=False)) == []
    assert names(poller.poll(full=True)) == ["2015/early.csv", "2016/a.csv", "2017/b.csv"]


def test_what_the_manifest_knows_costs_nothing_until_it_changes() -> None:
    listing = FakeListing()
    poller = BucketPoller(listing)  # type: ignore[arg-type]
    listing.put("a.csv", 10, "e1")
    listing.put("b.csv", 10, "e2")
    poller.remember(poller.poll(full=True))
    assert names(poller.poll(full=True)) == []
    listing.put("a.csv", 10, "e9")  # overwritten, same size and second: the ETag tells
    assert names(poller.poll(full=True)) == ["a.csv"]
    del listing.objects["b.csv"]
    poller.poll(full=True)
    assert "b.csv" not in poller.known  # gone: should it come back, it is looked at again


def test_a_poll_whose_objects_could_not_be_queued_is_listed_again() -> None:
    listing = FakeListing()
    poller = BucketPoller(listing)  # type: ignore[arg-type]
    listing.put("a.csv", 10, "e1")
    poller.poll(full=True)
    listing.put("b.csv", 10, "e2")
    assert names(poller.poll(full=False)) == ["b.csv"]
    poller.retract()  # say, the database did not answer
    assert names(poller.poll(full=False)) == ["b.csv"]
