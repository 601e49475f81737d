"""What the landing zone holds at a glance: files routed, ignored, already loaded.

The daemon logs it at start, so that a user sees which folder is watched and whether the files
in it will load; with no routed file it says which names are routed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg
import structlog

from watcher.ingest import unchanged_since_recorded
from watcher.landing.zone import Candidate, LandingZone
from watcher.manifest import ManifestEntry, all_entries
from watcher.routes import ROUTES, Route, route_for

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Inventory:
    folder: str
    """The landing zone: the absolute folder, or the bucket URL."""
    routed: int
    """Files a route takes (loaded now or already)."""
    ignored: int
    """Entries no route takes, or that cannot be read as a file (their reason is recorded)."""
    already_loaded: int
    """Routed files the manifest holds in exactly this version: they are not read again."""

    @property
    def to_read(self) -> int:
        return self.routed - self.already_loaded


def take_inventory(
    folder: str, candidates: Iterable[Candidate], known: Mapping[str, ManifestEntry] | None
) -> Inventory:
    """Count the candidates; ``known`` (the manifest by path) None when the database did not answer."""
    routed = ignored = loaded = 0
    for candidate in candidates:
        if candidate.problem is not None or route_for(os.path.basename(candidate.relative)) is None:
            ignored += 1
            continue
        routed += 1
        entry = (known or {}).get(candidate.relative)
        if entry is not None and entry.status in ("loaded", "duplicate"):
            try:
                info = candidate.hint()
            except OSError:
                continue
            if unchanged_since_recorded(entry, info.st_size, info.st_mtime_ns, info.etag):
                loaded += 1
    return Inventory(folder, routed, ignored, loaded)


def routed_names(routes: Iterable[Route] = ROUTES) -> str:
    """Which file names load, and where: ``'daily' and 'activity' → raw.daily_activity; ...``."""
    return "; ".join(
        f"{' and '.join(repr(k) for k in route.keywords)} → raw.{route.table}" for route in routes
    )


def no_routed_file_hint(routes: Iterable[Route] = ROUTES) -> str:
    return (
        "no file here has a routed name: a file loads when its name contains "
        f"{routed_names(routes)} (case does not matter), e.g. dailyActivity_merged.csv"
    )


def log_inventory(zone: LandingZone, url: str) -> Inventory:
    """Log the landing zone's inventory (one quick look at the manifest; no retries at start)."""
    known: dict[str, ManifestEntry] | None
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            known = {e.source_path: e for e in all_entries(conn)}
    except psycopg.Error:
        known = None
    try:
        inventory = take_inventory(zone.url, zone.scan(), known)
    except OSError as exc:  # a bucket that does not answer (the folder's scan reports, never raises)
        log.warning("landing_zone_unreadable", step="startup", landing=zone.url, error=str(exc)[:500])
        return Inventory(zone.url, 0, 0, 0)
    log.info(
        "landing_zone_inventory",
        step="startup",
        folder=inventory.folder,
        files_routed=inventory.routed,
        files_ignored=inventory.ignored,
        files_already_loaded=inventory.already_loaded if known is not None else None,
        files_to_read=inventory.to_read if known is not None else None,
    )
    if inventory.routed == 0 and inventory.ignored == 0:
        log.info(
            "landing_zone_empty",
            step="startup",
            folder=inventory.folder,
            hint=f"copy exports here: they load while the daemon runs. Names that load: {routed_names()}",
        )
    elif inventory.routed == 0:
        log.warning("no_routed_file", step="startup", folder=inventory.folder, hint=no_routed_file_hint())
    return inventory
