"""The landing zone: a folder or a bucket behind one small protocol (``zone.LandingZone``).

The folder's side: ``scanner`` (list), ``readiness`` (settle), ``observer`` (file events or
polling), ``folder`` (the zone). The bucket's side: ``bucket`` (list with a cursor, open a
stream) and ``objectstream`` (the GET as a file-like stream). Nothing after a ``Candidate``
knows which side it came from.
"""

from __future__ import annotations

from watcher.config import ConfigError, Settings
from watcher.errortext import first_line
from watcher.landing.zone import Candidate, LandingZone, Version

__all__ = ["Candidate", "LandingZone", "Version", "open_zone"]


def open_zone(settings: Settings) -> LandingZone:
    """The landing zone the settings name: a bucket URL, else the folder."""
    if settings.bucket_url is not None:
        from watcher.landing.bucket import BucketZone

        try:
            return BucketZone(settings.bucket_url, allow_http=settings.allow_http)
        except Exception as exc:  # obstore's own errors: an unknown region, a malformed URL...
            raise ConfigError(f"the bucket {settings.bucket_url} cannot be used: {first_line(exc)}") from exc
    from watcher.landing.folder import FolderZone

    return FolderZone(settings.data_dir)
