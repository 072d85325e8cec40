"""A persistent gallery of enrolled faces behind one interface (``BaseGallery``), in a SQLite
file (the embedded default, ``Gallery``) or a PostgreSQL database shared by several servers.

``open_gallery(location, ...)`` picks the backend: a ``postgresql://USER@HOST[:PORT]/DB`` URL,
else a file path. ``generation`` counts committed changes to the faces, so callers holding
embeddings or a search index can tell when it is stale, and ``changes(g)`` says what changed.
"""

import os
from pathlib import Path

from tripletface.gallery.base import (
    NAME_LENGTH,
    SCHEMA_VERSION,
    BaseGallery,
    Changes,
    Counts,
    Names,
    Snapshot,
    check_name,
)
from tripletface.gallery.sqlite import SQLiteGallery

Gallery = SQLiteGallery

__all__ = [
    "NAME_LENGTH",
    "SCHEMA_VERSION",
    "BaseGallery",
    "Changes",
    "Counts",
    "Gallery",
    "Names",
    "SQLiteGallery",
    "Snapshot",
    "check_name",
    "default_gallery_path",
    "gallery_exists",
    "gallery_location",
    "is_url",
    "open_gallery",
]


def default_gallery_path() -> Path:
    """$TRIPLETFACE_GALLERY, else gallery.db in the XDG data folder (~/.local/share/tripletface)."""
    if os.environ.get("TRIPLETFACE_GALLERY"):
        return Path(os.environ["TRIPLETFACE_GALLERY"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "tripletface" / "gallery.db"


def is_url(location) -> bool:
    """Does ``location`` name a PostgreSQL database rather than a file?"""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def gallery_location(location: str | Path | None) -> str | Path:
    """A PostgreSQL URL as given, a file path as a Path, None as the default file."""
    if location is None:
        return default_gallery_path()
    return location if is_url(location) else Path(location)


def gallery_exists(location: str | Path) -> bool:
    """Is there a gallery to read at ``location``? (A database is asked when opened.)"""
    return is_url(location) or Path(location).exists()


def open_gallery(
    location: str | Path,
    encoder_name: str | None,
    encoder_version: str | None,
    embedding_dim: int | None,
    create: bool = True,
    read_only: bool = False,
) -> BaseGallery:
    """The gallery at a file path or PostgreSQL URL, checked to be of this encoder (None, None,
    None: an existing gallery of whichever encoder made it)."""
    if is_url(location):
        from tripletface.gallery.postgres import PostgresGallery

        return PostgresGallery(
            location, encoder_name, encoder_version, embedding_dim, create, read_only
        )
    return SQLiteGallery(location, encoder_name, encoder_version, embedding_dim, create, read_only)
