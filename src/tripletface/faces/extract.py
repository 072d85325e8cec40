"""The faces of photo files as an encoder's input: boxes and chips, made in worker processes.

A ``FaceStream`` forks its workers and hands them files as soon as it is created, so that they
detect while the caller is still importing torch and loading its encoder, about a second
(bench/startup.py). Processes rather than threads because dlib holds the GIL while it detects
(measured: two threads take as long as one). Nothing here imports torch, so the workers forked
before it carry none of its thread pools.
"""

import functools
import hashlib
import multiprocessing as mp
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tripletface.data.images import load_image
from tripletface.errors import TripletfaceError
from tripletface.workers import worker_pool

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PhotoFaces:
    """The faces of one photo file, or the error that made it unusable (then ``error`` is set
    and there are no faces).

    ``chips`` holds one N x S x S x 3 uint8 chip per box; once encoded, ``embeddings`` holds one
    N x D row per box instead. ``digest`` is the SHA-256 of the file's bytes.
    """

    path: str
    boxes: list[Box] = field(default_factory=list)
    chips: np.ndarray | None = None
    digest: str = ""
    error: TripletfaceError | None = None
    embeddings: np.ndarray | None = None


@dataclass(frozen=True)
class ChipMaker:
    """Turns an RGB image into an encoder's input: (boxes, N x size x size x 3 uint8 chips).

    With a detector (a ``FaceDetector`` method), one aligned chip per detected face, padded by
    ``padding``; with ``detector`` None, the whole image resized, as one face with the image's box.
    """

    detector: str | None
    size: int
    padding: float | None

    @classmethod
    def for_encoder(cls, detector: str | None, side: int, padding: float | None) -> "ChipMaker":
        """The maker for an encoder of input ``side`` and chip ``padding`` (None: whole images,
        which need no detector)."""
        return cls(detector if padding is not None else None, side, padding)

    def __call__(self, image: np.ndarray) -> tuple[list[Box], np.ndarray]:
        if self.detector is None:
            height, width = image.shape[:2]
            whole = Image.fromarray(image).resize((self.size, self.size), Image.BILINEAR)
            return [(0, 0, width, height)], np.array(whole)[None]
        from tripletface.faces.align import face_chips

        faces = _detector(self.detector).detect(image)
        boxes = [tuple(int(v) for v in face.box) for face in faces]
        return boxes, face_chips(image, faces, self.size, self.padding)


@functools.cache
def _detector(method: str):
    """One detector per process and method, built on first use (workers build their own)."""
    from tripletface.faces.detect import FaceDetector

    return FaceDetector(method=method)


def faces_of_file(maker: ChipMaker, path: str) -> PhotoFaces:
    """The boxes, chips and content hash of one file, or the error that makes it unusable."""
    try:
        boxes, chips = maker(load_image(path))
        return PhotoFaces(path, boxes, chips, file_hash(path))
    except TripletfaceError as error:
        return PhotoFaces(path, error=error)


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes: the same photo is enrolled once, whatever its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FaceStream:
    """``faces_of_file`` of each path, in order, computed by ``workers`` processes that start
    at construction; one at a time in this process when ``workers`` <= 1, there is a single file,
    or the platform cannot fork.

    At most ``ahead`` files are in flight, so that memory stays bounded on large folders while the
    workers keep busy as the caller consumes. Use it as a context manager (or call ``close``) so
    that files not yet started are dropped when the caller stops early.
    """

    def __init__(
        self, maker: ChipMaker, paths: Iterable[str], workers: int = 2, ahead: int = 128
    ) -> None:
        self.maker = maker
        self.paths = list(paths)
        self.parallel = workers > 1 and len(self.paths) > 1 and "fork" in mp.get_all_start_methods()
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[Future] = deque()
        self._next = 0
        if self.parallel:
            self._pool = worker_pool(workers)
            self._submit(ahead)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[PhotoFaces]:
        if not self.parallel:
            yield from (faces_of_file(self.maker, path) for path in self.paths)
            return
        try:
            while self._pending:
                self._submit(1)
                yield self._pending.popleft().result()
        finally:
            self.close()

    @property
    def detecting(self) -> bool:
        """Whether worker processes still have files to finish (never in serial mode)."""
        pending = self._next < len(self.paths) or any(not f.done() for f in self._pending)
        return self.parallel and pending

    def close(self) -> None:
        """Stop the workers, dropping the files they have not started; the stream ends."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
        self._next = len(self.paths)

    def __enter__(self) -> "FaceStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _submit(self, count: int) -> None:
        for path in self.paths[self._next : self._next + count]:
            self._pending.append(self._pool.submit(faces_of_file, self.maker, path))
        self._next = min(self._next + count, len(self.paths))
