"""Copy a gallery between any two backends (SQLite file or PostgreSQL URL).

One transaction per person in the destination, so an interrupted copy keeps every person it
finished and a second run resumes after them. The destination is checked at the end: the same
encoder fingerprint, every person of the source with the same number of faces. Like every writer
the copy keeps the destination's saved search index in step, so its first reader builds nothing.
"""

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from tripletface.errors import GalleryError
from tripletface.gallery import BaseGallery, open_gallery
from tripletface.search import GalleryIndex


class Copied(NamedTuple):
    """What a copy did: people and faces copied now, people already there (a resumed copy)."""

    people: int
    faces: int
    skipped: int


def copy_gallery(
    source: str | Path,
    destination: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> Copied:
    """Copy every person of ``source`` missing from ``destination`` (created if need be), then
    the threshold and calibration; ``progress(faces, total faces)`` after each person.

    GalleryError if the destination holds another encoder's faces, or a person with another
    number of faces than in the source.
    """
    with (
        open_gallery(source, None, None, None, read_only=True) as src,
        open_gallery(destination, src.encoder_name, src.encoder_version, src.embedding_dim) as dst,
    ):
        if _same_place(src, dst):
            raise GalleryError(f"{dst.location} is {src.location} itself: nothing to copy")
        index = GalleryIndex(dst, persist=True)
        dst.on_change(index.written)
        dst.on_close(index.flush)
        there = dict(dst.people())
        people = faces = skipped = 0
        total = src.face_count()
        for name, count in src.people():
            if name in there:
                _same_count(dst, name, there[name], count)
                skipped += 1
            else:
                matrix, sources, hashes, boxes = src.records_of(name)
                dst.add_faces(name, matrix, sources, hashes, boxes)
                people, faces = people + 1, faces + len(matrix)
            if progress is not None:
                progress(count, total)
        dst.set_calibration(src.threshold, src.calibration)
        _check_copy(src, dst)
    return Copied(people, faces, skipped)


def _same_place(src: BaseGallery, dst: BaseGallery) -> bool:
    """Are both the same file or the same database? (A copied file keeps its uid: not that.)"""
    if isinstance(src.path, Path) and isinstance(dst.path, Path):
        return src.path.resolve() == dst.path.resolve()
    return src.location == dst.location


def _same_count(dst: BaseGallery, name: str, there: int, count: int) -> None:
    if there != count:
        raise GalleryError(
            f"{dst.location} already has {name!r} with {there} faces, the source {count}: "
            "copy into an empty gallery, or remove that person from the destination"
        )


def _check_copy(src: BaseGallery, dst: BaseGallery) -> None:
    """GalleryError unless the destination holds every person of the source with as many faces,
    from the same encoder weights."""
    there = dict(dst.people())
    missing = [name for name, count in src.people() if there.get(name) != count]
    if dst.encoder_version != src.encoder_version or missing:
        raise GalleryError(
            f"{dst.location} does not hold what {src.location} holds after the copy "
            f"({len(missing)} people differ, e.g. {missing[:1]}): another process changed one "
            "of them; run the copy again"
        )
