"""What the HTTP routes call: detection workers, the batched encoder and the gallery, loaded once.

Each kind of work has its own place, so that the event loop only waits: photos are decoded and
their faces detected in forked worker processes (``workers.worker_pool``), chips are
embedded by the ``EncoderBatcher`` thread, and the gallery and its search index are used from
one thread of their own (a SQLite connection belongs to the thread that opened it, and one
thread serialises the writes). Every request reads the gallery's generation, so changes made by
other processes (the CLI, other servers) are seen by the next request.
"""

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from tripletface.errors import GalleryUnavailable, InputError, TripletfaceError
from tripletface.faces.extract import Box
from tripletface.gallery import Counts, check_name
from tripletface.recognize import FaceRecognizer, Match, Verification
from tripletface.service.batching import EncoderBatcher
from tripletface.service.metrics import Metrics
from tripletface.service.photos import Detected, detect_upload

T = TypeVar("T")


class NotFoundError(InputError):
    """The person named in the request is not enrolled (HTTP 404)."""


class WorkersLostError(TripletfaceError):
    """A detection worker process died (killed): no photo can be read until a restart (HTTP
    503). Workers are not forked again: this process has loaded the encoder since."""


@dataclass(frozen=True)
class Health:
    """What /healthz reports."""

    people: int
    faces: int
    encoder: str


class Engine:
    """Enroll, identify, verify, list and remove, for many concurrent requests.

    ``pool``: the detection worker processes (already started, before torch loaded). ``open()``
    the gallery, ``await start()`` in the server's event loop, ``await stop()`` there, then
    ``close()``.
    """

    def __init__(
        self,
        recognizer: FaceRecognizer,
        pool: Executor,
        metrics: Metrics | None = None,
        batch_wait: float = 0.004,
    ) -> None:
        self.recognizer = recognizer
        self.pool = pool
        self.metrics = metrics or Metrics()
        self.batcher = EncoderBatcher(
            self._encode, wait=batch_wait, on_batch=self.metrics.batch.observe
        )
        self._gallery_thread = ThreadPoolExecutor(1, thread_name_prefix="tripletface-gallery")
        self._batching: asyncio.Task | None = None
        self._workers_lost = False

    def open(self) -> None:
        """Open the gallery (in its thread) and check that a threshold is known."""
        self._gallery_thread.submit(self._open).result()

    async def start(self) -> None:
        """Start batching the encoder's work, in the server's event loop."""
        self._batching = asyncio.create_task(self.batcher.run())

    async def stop(self) -> None:
        """Stop batching (after the last request was answered)."""
        if self._batching is not None:
            self._batching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._batching

    def close(self) -> None:
        """Stop the encoder thread, close the gallery, stop the detection workers."""
        self.batcher.close()
        self._gallery_thread.submit(self.recognizer.close).result()
        self._gallery_thread.shutdown(wait=True)
        self.pool.shutdown(wait=True, cancel_futures=True)

    async def health(self) -> Health:
        """Number of people and faces in the gallery now, and the encoder's name;
        WorkersLostError once a detection worker was found dead."""
        if self._workers_lost:
            raise _workers_lost()
        people, faces = await self._in_gallery(self._counts)
        return Health(people, faces, self.recognizer.encoder_name)

    async def gauges(self) -> None:
        """Bring the gallery's gauges up to date; while its database cannot be reached they
        keep their last values, so that the requests' metrics (the 503s) can still be scraped."""
        with contextlib.suppress(GalleryUnavailable):
            await self._in_gallery(self._counts)

    async def enroll(self, name: str, image: bytes, base64_text: bool, largest: bool) -> list[int]:
        """Add the one face of the photo (the largest if ``largest``) to ``name``; its face ids,
        returned once the gallery has committed them."""
        check_name(name)
        found = await self._detect(image, base64_text)
        _require_face(found.boxes)
        if len(found.boxes) > 1 and not largest:
            raise InputError(
                f"image: {len(found.boxes)} faces found; send a photo of one face, "
                "or largest=true to enroll the largest"
            )
        # The detector lists faces largest first: only that one is encoded.
        embedding = await self.batcher.embed(found.chips[:1])
        return await self._in_gallery(
            self.recognizer.gallery.add_faces,
            name,
            embedding,
            ["<upload>"],
            [found.digest],
            found.boxes[:1],
        )

    async def identify(self, image: bytes, base64_text: bool) -> list[Match]:
        """One Match per face of the photo, against the gallery as it is now."""
        found = await self._detect(image, base64_text)
        if not found.boxes:
            return []
        embeddings = await self.batcher.embed(found.chips)
        return await self._in_gallery(self.recognizer.match, found.boxes, embeddings)

    async def verify(
        self, name: str, image: bytes, base64_text: bool
    ) -> tuple[Verification, float]:
        """Is ``name`` in the photo? Decided on its face nearest to their enrolled faces; with
        the threshold it was decided by."""
        await self._in_gallery(self._faces_of, name)  # a stranger's name fails before detection
        found = await self._detect(image, base64_text)
        _require_face(found.boxes)
        embeddings = await self.batcher.embed(found.chips)
        return await self._in_gallery(self._verify, name, embeddings)

    async def people(self) -> list[tuple[str, int]]:
        """(name, number of faces) of everyone enrolled, by name."""
        return await self._in_gallery(self._people)

    async def remove(self, name: str) -> int:
        """Delete a person and their faces; the number of faces removed (404 if absent)."""
        return await self._in_gallery(self._remove, name)

    def _open(self) -> None:
        self.recognizer.index.refresh()
        _ = self.recognizer.threshold  # an encoder without a threshold fails at start-up
        self._counts()

    def _counts(self) -> Counts:
        """The gallery's numbers of people and faces, counted by its database (a list of
        millions of people is not read for them), also set on the gauges."""
        counts = self.recognizer.gallery.counts()
        self._gauge(counts)
        return counts

    def _people(self) -> list[tuple[str, int]]:
        """Everyone enrolled, the gauges set from the list at no extra cost."""
        people = self.recognizer.gallery.people()
        self._gauge(Counts(len(people), sum(n for _, n in people)))
        return people

    def _gauge(self, counts: Counts) -> None:
        """Show the gallery's counts on /metrics."""
        self.metrics.people.set(counts.people)
        self.metrics.faces.set(counts.faces)

    def _faces_of(self, name: str) -> np.ndarray:
        mine = self.recognizer.gallery.faces_of(name)
        if len(mine) == 0:
            raise NotFoundError(f"{name!r} is not enrolled: see GET /v1/people")
        return mine

    def _verify(self, name: str, embeddings: np.ndarray) -> tuple[Verification, float]:
        result = self.recognizer.verdict(embeddings, self._faces_of(name))
        return result, self.recognizer.threshold

    def _remove(self, name: str) -> int:
        # Asked in the delete's own transaction, not looked up before it: another process (a
        # server on the same gallery, the CLI) may remove the person in between.
        try:
            return self.recognizer.gallery.remove(name)
        except InputError:  # remove's only InputError: nobody of that name
            raise NotFoundError(f"{name!r} is not enrolled: see GET /v1/people") from None

    def _encode(self, chips: np.ndarray) -> np.ndarray:
        self.metrics.encoded.inc(len(chips))
        return self.recognizer.embed(chips)

    async def _detect(self, image: bytes, base64_text: bool) -> Detected:
        loop = asyncio.get_running_loop()
        maker = self.recognizer.chips
        try:
            found = await loop.run_in_executor(self.pool, detect_upload, maker, image, base64_text)
        except BrokenProcessPool:
            self._workers_lost = True
            raise _workers_lost() from None
        self.metrics.detected.inc(len(found.boxes))
        return found

    async def _in_gallery(self, function: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._gallery_thread, function, *args
        )


def _require_face(boxes: list[Box]) -> None:
    if not boxes:
        raise InputError("image: no face found; send a photo with a clear, frontal face")


def _workers_lost() -> WorkersLostError:
    return WorkersLostError(
        "a detection worker process was killed (out of memory?) and photos cannot be read: "
        "restart tripletface serve"
    )
