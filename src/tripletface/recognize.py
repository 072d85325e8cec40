"""One-shot recognition: enroll people from single photos, then identify (1:N) and verify (1:1).

    rec = FaceRecognizer("people.db")            # dlib-resnet, HOG detection with CNN fallback
    rec.enroll("ada", "ada.jpg")                 # one face per photo (largest=True to pick one)
    rec.identify("party.jpg")                    # [Match(box, name or None, distance)], per face
    rec.verify("door.jpg", "ada")                # Verification(same, distance)
    rec.remove("ada"); rec.people()              # [("bob", 2), ...]

Distances are squared Euclidean between *unit-length* embeddings (0 = identical, 4 = opposite),
for every encoder: dlib-resnet's raw descriptors are normalised too, so that a threshold means the
same thing whatever the encoder (FaceNet, Schroff et al. 2015) and one calibration procedure fits
all. A face is accepted as a person when its distance to one of that person's enrolled faces is at
most the threshold (the convention of ``tripletface.metrics``).

Which pixels reach the encoder: an encoder with ``chip_padding`` set wants aligned chips of
detected faces (real photos); one whose ``chip_padding`` is None, or a recognizer built with
``detector=None``, gets the whole image resized to its input size (e.g. the compact CNN trained on
synthetic faces that already fill the frame), reported as one face with the image's box.

Which code runs the encoder: ``runtime`` (``tripletface.models.runtime``), by default onnxruntime
when it is installed, so that recognition imports no torch; "torch" runs the PyTorch module.
"""

import functools
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tripletface import metrics
from tripletface.confidence import ConfidenceModel, default_model
from tripletface.confidence import fit as fit_confidence
from tripletface.data.images import load_image
from tripletface.errors import GalleryError, InputError, PhotoTakenError, TripletfaceError
from tripletface.faces.extract import Box, ChipMaker, FaceStream, PhotoFaces, file_hash
from tripletface.gallery import (
    BaseGallery,
    check_name,
    gallery_exists,
    gallery_location,
    open_gallery,
)
from tripletface.models.runtime import Runtime, TorchRuntime, load_runtime
from tripletface.search import ExactIndex, GalleryIndex
from tripletface.tta import mirror_average, with_mirrors

if TYPE_CHECKING:
    from tripletface.models import Encoder

# Squared Euclidean thresholds between unit-length embeddings, measured by bench/thresholds.py:
# on celeba299 (298 persons, 6003 colour faces in the wild; all 68,348 same-person and 17.9
# million different-person pairs) the largest threshold with a false accept rate <= 1e-3, rounded
# down. dlib-resnet: FAR 1.0e-3, FRR 15.1% there; on ORL FAR 1.9e-3, FRR 1.2%.
DEFAULT_THRESHOLDS: dict[str, float] = {"dlib-resnet": 0.1413}


@dataclass(frozen=True)
class Match:
    """One face found in an image: box (left, top, right, bottom), the person or None, distance,
    and the confidence that the face is the nearest person (None without a confidence model)."""

    box: Box
    name: str | None
    distance: float
    confidence: float | None = None


@dataclass(frozen=True)
class Verification:
    """Whether the image shows the person, the smallest distance to their enrolled faces and
    the confidence that it is them (None without a confidence model)."""

    same: bool
    distance: float
    confidence: float | None = None


@dataclass(frozen=True)
class Enrollment:
    """A face enrolled (or, when ``added`` is False, already in the gallery from the same file)."""

    name: str
    source: str
    box: Box
    added: bool


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen on labelled faces, with its error rates on all their pairs."""

    threshold: float
    far: float
    frr: float
    same_pairs: int
    different_pairs: int
    confidence: ConfidenceModel | None = None


class FaceRecognizer:
    """Enroll, identify, verify and remove people in a gallery file with one encoder; close it
    (or use it as a context manager) to close the gallery."""

    def __init__(
        self,
        gallery: str | Path | None = None,  # a file, or a postgresql://USER@HOST[:PORT]/DB URL
        encoder: "str | Path | Encoder" = "dlib-resnet",
        threshold: float | None = None,
        detector: str | None = "auto",
        read_only: bool = False,
        runtime: str = "auto",
        tta: bool = False,
        create: bool = True,
    ):
        self.encoder_name = _encoder_name(encoder)
        self.runtime: Runtime = load_runtime(encoder, runtime)
        self._source = encoder
        self.tta = tta
        self.gallery_path = gallery_location(gallery)
        self.read_only = read_only
        self.create = create and not read_only
        self._threshold = threshold
        info = self.runtime.info
        self.chips = ChipMaker.for_encoder(detector, info.input_size[0], info.chip_padding)

    def close(self) -> None:
        """Close the gallery if it was opened (a writer saves the search index it kept in step
        first); a later call opens it again."""
        if "gallery" in vars(self):
            try:
                self.gallery.close()  # its hooks still flush self.index
            finally:
                del self.gallery
                vars(self).pop("index", None)

    def __enter__(self) -> "FaceRecognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def enroll(self, name: str, image, largest: bool = False) -> Enrollment:
        """Add the one face of ``image`` (the largest if ``largest``) to the person ``name``."""
        source = _name_of(image)
        face = _pick(source, *self.faces(image), largest)
        return self._add(name, [(source, _hash_of(image), *face)])[0]

    def identify(self, image) -> list[Match]:
        """One Match per face in the image: nearest enrolled person, None beyond the threshold."""
        return self.match(*self.faces(image))

    def verify(self, image, name: str) -> Verification:
        """Is ``name`` in the image? Decided on the face of the image closest to their faces."""
        self._enrolled()
        mine = self.gallery.faces_of(name)
        if len(mine) == 0:
            raise InputError(
                f"{name!r} is not enrolled in {self.gallery.path}: see tripletface people"
            )
        boxes, embeddings = self.faces(image)
        _require_face(_name_of(image), boxes)
        return self.verdict(embeddings, mine)

    def verdict(self, embeddings: np.ndarray, enrolled: np.ndarray) -> Verification:
        """The Verification of P x D probe embeddings against a person's E x D enrolled ones:
        their smallest squared distance, under the threshold or not, and its confidence."""
        distance = float(ExactIndex(enrolled).search(embeddings, 1)[0].min())
        return Verification(distance <= self.threshold, distance, self._confidences(distance)[0])

    def watch(self, source, frames: bool = False, **options) -> Iterator:
        """TrackEvents of the people in a video file, stream URL or camera as their tracks end;
        with ``frames``, each annotated FrameResult too (``tripletface.video.events``)."""
        from tripletface.video import events

        return events(self, source, frames, **options)

    def remove(self, name: str) -> int:
        """Delete a person and all their enrolled faces; the number of faces removed."""
        return self.gallery.remove(name)

    def people(self) -> list[tuple[str, int]]:
        """(name, number of enrolled faces) of every person, by name."""
        return self.gallery.people()

    @property
    def threshold(self) -> float:
        """Accept distances <= this: as given, else the gallery's calibration, else the default."""
        if self._threshold is not None:
            return float(self._threshold)
        if gallery_exists(self.gallery_path) and self.gallery.threshold is not None:
            return float(self.gallery.threshold)
        if self.encoder_name in DEFAULT_THRESHOLDS:
            return DEFAULT_THRESHOLDS[self.encoder_name]
        raise InputError(
            f"encoder {self.encoder_name} has no default threshold: run tripletface calibrate DIR "
            "on labelled photos, or pass --threshold (threshold=...)"
        )

    @property
    def confidence_model(self) -> ConfidenceModel | None:
        """P(same person | distance): the gallery's calibration, else the encoder's default."""
        if gallery_exists(self.gallery_path) and self.gallery.calibration is not None:
            return ConfidenceModel.from_dict(self.gallery.calibration)
        return default_model(self.encoder_name)

    def _confidences(self, distances) -> list[float | None]:
        """The confidence of each distance, rounded to 4 places (None without a model)."""
        model = self.confidence_model
        values = np.ravel(distances)
        return [None] * len(values) if model is None else np.round(model(values), 4).tolist()

    @functools.cached_property
    def encoder(self) -> "Encoder":
        """The PyTorch encoder (loaded now, with torch, when another runtime embeds)."""
        from tripletface.models import load_encoder

        if isinstance(self.runtime, TorchRuntime):
            return self.runtime.encoder
        source = self._source
        return load_encoder(source) if isinstance(source, (str, Path)) else source

    @functools.cached_property
    def gallery(self) -> BaseGallery:
        """The gallery (file or database), opened (and created if ``create``) on first use;
        what is written through it also keeps the search index saved beside it in step."""
        gallery = open_gallery(
            self.gallery_path,
            self.encoder_name,
            self.runtime.info.fingerprint,
            self.runtime.info.embedding_dim,
            create=self.create,
            read_only=self.read_only,
        )
        if gallery.writable:
            gallery.on_change(lambda faces: self.index.written(faces))
            gallery.on_close(lambda: self.index.flush())
        return gallery

    @functools.cached_property
    def index(self) -> GalleryIndex:
        """Nearest-face search over the gallery, kept in step with its changes."""
        return GalleryIndex(self.gallery, persist=True)

    def calibrate(self, embeddings: np.ndarray, labels, far: float = 1e-3) -> Calibration:
        """Choose the threshold at ``far`` on labelled unit-length embeddings and fit the
        confidence model on all their pairs; store both."""
        result = threshold_at_far(embeddings, labels, far)
        distances, same = pair_distances(embeddings, labels)
        model = fit_confidence(
            distances,
            same,
            source=f"tripletface calibrate: {int(same.sum())} same-person and "
            f"{int((~same).sum())} different-person pairs of {len(labels)} faces",
        )
        self.gallery.set_calibration(result.threshold, model.to_dict())
        return replace(result, confidence=model)

    def faces(self, image) -> tuple[list[Box], np.ndarray]:
        """Boxes and unit-length embeddings of the faces in one image (path, PIL image or array)."""
        boxes, chips = self.chips(load_image(image))
        return boxes, self.embed(chips)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Unit-length N x D float32 embeddings of N x H x W x 3 uint8 chips (with ``tta``, the
        mean of each chip's and its mirror's)."""
        if self.tta:
            return mirror_average(self.runtime.embed(with_mirrors(chips)))
        return self.runtime.embed(chips)

    def match(self, boxes: list[Box], embeddings: np.ndarray) -> list[Match]:
        """Matches of already embedded faces against the gallery."""
        threshold = self._ready()
        if len(boxes) == 0:
            return []
        distances, rows = self.index.search(embeddings, 1)
        if np.asarray(distances).shape[1] == 0:  # another process removed the last face since
            self._enrolled()
        names = self.index.names
        nearest = np.asarray(distances)[:, 0]
        return [
            Match(box, names[int(row[0])] if dist <= threshold else None, float(dist), sure)
            for box, dist, row, sure in zip(
                boxes, nearest, np.asarray(rows), self._confidences(nearest), strict=True
            )
        ]

    def embed_files(
        self, files: Iterable[str] | FaceStream, workers: int = 2, batch: int = 64
    ) -> Iterator[PhotoFaces]:
        """PhotoFaces with ``embeddings`` (unit rows) of each file, in order; unusable files
        come with their ``error``.

        ``files``: paths, detected in ``workers`` processes, or a FaceStream already started
        with this recognizer's ``chips`` (so that detection overlaps loading the encoder). The
        chips of ``batch`` files go through the encoder together in this process, on one thread
        while workers detect: torch's threads spin-waiting for cores that the workers hold made
        the encoder 2x slower (measured on ORL, 2 cores); on all threads once they are done.
        """
        stream = files if isinstance(files, FaceStream) else FaceStream(self.chips, files, workers)
        if stream.maker != self.chips:
            raise ValueError(f"the stream makes {stream.maker}, this encoder takes {self.chips}")
        with stream:
            for group in _batches(stream, batch):
                chips = [item.chips for item in group if item.error is None]
                with self.runtime.threads(1 if stream.detecting else None):
                    embedded = iter(
                        _split(self.embed(np.concatenate(chips)), chips) if chips else []
                    )
                for item in group:
                    done = item.error is None
                    yield replace(item, chips=None, embeddings=next(embedded)) if done else item

    def identify_files(
        self, files: Iterable[str] | FaceStream, workers: int = 2
    ) -> Iterator[tuple[str, list[Match] | TripletfaceError]]:
        """(path, list of Match) per file in order, or (path, error) for an unusable file."""
        self._ready()  # an empty gallery or a missing threshold fails before any detection
        # While the workers detect the first faces: opening a saved index and reading the
        # changes since it takes ~0.1 s at a million faces, and then costs no waiting.
        self.index.refresh()
        for item in self.embed_files(files, workers):
            yield item.path, item.error or self.match(item.boxes, item.embeddings)

    def enroll_photos(
        self,
        name: str,
        files: Iterable[str] | FaceStream,
        largest: bool = False,
        workers: int = 2,
    ) -> list[Enrollment]:
        """Enroll several photos of one person, all or none: the first unusable one is raised."""
        faces = []
        for item in self.embed_files(files, workers):
            if item.error is not None:
                raise item.error
            face = _pick(item.path, item.boxes, item.embeddings, largest)
            faces.append((item.path, item.digest, *face))
        return self._add(name, faces)

    def enroll_folders(
        self,
        named_paths: Iterable[tuple[str, str]],
        largest: bool = False,
        workers: int = 2,
        faces: Iterable[str] | FaceStream | None = None,
    ) -> Iterator[tuple[str, Enrollment | TripletfaceError]]:
        """Enroll (name, path) pairs: (path, Enrollment or error) per file, each one committed;
        a file that cannot be used, or whose photo is enrolled as someone else, is its error and
        the rest go on. ``faces``: those paths in the same order, or a FaceStream already
        started on them."""
        names = {path: name for name, path in named_paths}
        for item in self.embed_files(names if faces is None else faces, workers):
            if item.error is not None:
                yield item.path, item.error
                continue
            try:
                face = _pick(item.path, item.boxes, item.embeddings, largest)
                yield item.path, self._add(names[item.path], [(item.path, item.digest, *face)])[0]
            except (InputError, PhotoTakenError) as error:
                yield item.path, error

    def _enrolled(self) -> None:
        if self.gallery.is_empty():
            raise GalleryError(
                f"{self.gallery.path} is empty: enroll someone first "
                "(tripletface enroll NAME PHOTO)"
            )

    def _ready(self) -> float:
        """The threshold, once the gallery is known to hold someone to compare with."""
        self._enrolled()
        return self.threshold

    def _add(self, name: str, faces: list[tuple[str, str, Box, np.ndarray]]) -> list[Enrollment]:
        """Commit (source, hash, box, embedding) faces of one person in one transaction.

        A file whose content is already enrolled for ``name`` is not added twice, so that
        enrolling a folder again after an interruption only adds what is missing; one enrolled
        for someone else is a PhotoTakenError (``add_faces``: the same face cannot be two
        persons). Both are decided by ``add_faces`` in its transaction, from one query.
        """
        check_name(name)  # before any file is looked at
        if not faces:
            return []
        sources, hashes, boxes, embeddings = zip(*faces, strict=True)
        ids = self.gallery.add_faces(
            name, np.stack(embeddings), sources, hashes, boxes, skip_enrolled=True
        )
        return [
            Enrollment(name, source, box, face_id is not None)
            for source, box, face_id in zip(sources, boxes, ids, strict=True)
        ]


def _encoder_name(encoder: "str | Path | Encoder") -> str:
    """The name the gallery records: registry name, or checkpoint file name."""
    if not isinstance(encoder, (str, Path)):
        from tripletface.models.checkpoint import architecture_name

        return architecture_name(encoder)
    return Path(encoder).name if Path(encoder).suffix == ".pt" else str(encoder)


def _name_of(image) -> str:
    """How an image is named in messages and in the gallery: its path, or its type."""
    return str(image) if isinstance(image, (str, Path)) else f"<{type(image).__name__}>"


def _hash_of(image) -> str:
    """Content hash of an image given as a path (its bytes), PIL image or array (its pixels)."""
    if isinstance(image, (str, Path)):
        try:
            return file_hash(image)
        except OSError as error:
            raise InputError(f"{image}: cannot read the file ({error.strerror})") from None
    pixels = load_image(image)
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def _pick(source: str, boxes: list[Box], embeddings: np.ndarray, largest: bool):
    """(box, embedding) of the face to enroll: the only one, or the largest when asked."""
    _require_face(source, boxes)
    if len(boxes) > 1 and not largest:
        raise InputError(
            f"{source}: {len(boxes)} faces found; crop the photo to one face, "
            "or enroll the largest with --largest (largest=True)"
        )
    return boxes[0], embeddings[0]  # the detector sorts faces by area, largest first


def _require_face(source: str, boxes: list[Box]) -> None:
    if not boxes:
        raise InputError(f"{source}: no face found; use a photo with a clear, frontal face")


def pair_distances(embeddings: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """(squared Euclidean distance, same label) of every unordered pair of N x D rows."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.einsum("ij,ij->i", x, x)
    first, second = np.triu_indices(len(x), k=1)
    # ||a||^2 + ||b||^2 - 2 a.b in float64; rounding can make it slightly negative.
    squared = np.maximum(norms[:, None] + norms[None, :] - 2.0 * (x @ x.T), 0.0)
    labels = np.asarray(labels)
    return squared[first, second], labels[first] == labels[second]


def threshold_at_far(embeddings: np.ndarray, labels, far: float = 1e-3) -> Calibration:
    """The largest threshold whose false accept rate on all pairs of labelled rows is <= far."""
    if not 0 < far < 1:
        raise InputError(f"far = {far}: give a false accept rate between 0 and 1, e.g. 1e-3")
    distances, same = pair_distances(embeddings, labels)
    _, threshold = metrics.val_at_far(distances, same, far=far)
    accepted = distances <= threshold
    return Calibration(
        threshold,
        float(accepted[~same].mean()),
        float(1 - accepted[same].mean()),
        int(same.sum()),
        int((~same).sum()),
    )


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _split(embeddings: np.ndarray, chips: list[np.ndarray]) -> list[np.ndarray]:
    """Rows of the stacked embeddings cut back into one array per image."""
    return np.split(embeddings, np.cumsum([len(c) for c in chips])[:-1])
