"""Faces in a photo: boxes, dlib's 5 landmarks and a score, from dlib's HOG or CNN detector.

The HOG detector (Dalal and Triggs 2005, dlib's frontal model) is fast and finds faces of about
80 x 80 pixels and more; the CNN detector (dlib's max-margin object detector, King 2015) finds
faces down to about 40 pixels and at wider angles, at roughly a hundred times the cost. Images are
rescaled once before detection: small ones upsampled (``upsample`` doublings) so that small faces
reach the detectors' minimum size, large ones downsampled to ``max_side`` so that detection time
stays bounded; boxes are mapped back and the landmarks predicted on the original pixels.
"""

from dataclasses import dataclass, field

import dlib
import numpy as np
from PIL import Image

from tripletface.cache import data_dir, move_into_place, temporary_path
from tripletface.data.images import require_rgb
from tripletface.errors import InputError
from tripletface.models.dlib_files import CNN_DETECTOR, LANDMARKS_5, dlib_model_path

METHODS = ("hog", "cnn", "auto")
# The CNN costs about 100x the HOG per pixel: it gets a smaller image.
_CNN_MAX_SIDE = 900


@dataclass(frozen=True)
class Face:
    """One face: box (left, top, right, bottom) in original image pixels, right and bottom
    exclusive and clipped to the image; 5 x 2 float (x, y) landmarks in dlib's 5-point order;
    the detector's score (HOG: SVM margin, CNN: confidence; higher is surer), its name, and the
    factor the image was resized by when it found the face."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray = field(compare=False, repr=False)
    score: float
    detector: str
    scale: float = 1.0

    @property
    def area(self) -> int:
        """Box area in pixels."""
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


class FaceDetector:
    """Detects faces with dlib's models, loaded once per detector on first use.

    method: "hog" (default, fast), "cnn" (slower, finds smaller and turned faces) or "auto"
    (HOG; if it finds nothing, HOG on a twice larger image when that stays within ``max_side``,
    then the CNN). upsample: how many times small images are doubled before detection (capped
    by max_side). max_side: longest side of the image the detector sees. threshold: added to the
    HOG detector's decision threshold (negative finds more faces and more false ones).
    """

    def __init__(
        self,
        method: str = "hog",
        upsample: int = 1,
        max_side: int = 2000,
        threshold: float = 0.0,
    ) -> None:
        if method not in METHODS:
            raise InputError(f"unknown detection method {method!r}: choose one of {METHODS}")
        if int(upsample) != upsample or upsample < 0:
            raise InputError(f"upsample must be an integer >= 0, got {upsample!r}")
        if int(max_side) != max_side or max_side < 64:
            raise InputError(f"max_side must be an integer >= 64, got {max_side!r}")
        self.method = method
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self.threshold = float(threshold)
        self._hog = None
        self._cnn = None
        self._predictor = None

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB image, largest box first."""
        image = require_rgb(image, "face detection")
        scale = _detection_scale(image.shape, self.upsample, self.max_side)
        faces = self._detect_cnn(image) if self.method == "cnn" else self._detect_hog(image, scale)
        if not faces and self.method == "auto":
            larger = _detection_scale(image.shape, self.upsample + 1, self.max_side)
            faces = (larger > scale and self._detect_hog(image, larger)) or self._detect_cnn(image)
        return sorted(faces, key=lambda face: face.area, reverse=True)

    def face_in_box(
        self, image: np.ndarray, box: tuple[int, int, int, int], score: float = 0.0
    ) -> Face:
        """The Face with landmarks predicted inside a given box (left, top, right, bottom),
        for a face known to be there, such as a tightly cropped portrait no detector fires on."""
        image = require_rgb(image, "face detection")
        left, top, right, bottom = (round(float(v)) for v in box)
        if right <= left or bottom <= top:
            raise InputError(f"face box {box} is empty: give (left, top, right, bottom)")
        return self._face(image, np.array([left, top, right, bottom], float), score, "box")

    def _detect_hog(self, image: np.ndarray, scale: float) -> list[Face]:
        """HOG detections on the image resized by ``scale``."""
        if self._hog is None:
            self._hog = frontal_face_detector()
        rects, scores, _ = self._hog.run(_rescale(image, scale), 0, self.threshold)
        return [
            self._face(image, _box_of(rect) / scale, score, "hog", scale)
            for rect, score in zip(rects, scores, strict=True)
        ]

    def _detect_cnn(self, image: np.ndarray) -> list[Face]:
        """CNN detections on the image rescaled within the CNN's smaller maximum side."""
        scale = _detection_scale(image.shape, self.upsample, min(self.max_side, _CNN_MAX_SIDE))
        if self._cnn is None:
            self._cnn = dlib.cnn_face_detection_model_v1(str(dlib_model_path(CNN_DETECTOR)))
        found = self._cnn(_rescale(image, scale), 0)
        return [
            self._face(image, _box_of(item.rect) / scale, item.confidence, "cnn", scale)
            for item in found
        ]

    def _face(
        self, image: np.ndarray, box: np.ndarray, score: float, detector: str, scale: float = 1.0
    ) -> Face:
        """Face from an exclusive float box in original pixels, landmarks from the predictor."""
        if self._predictor is None:
            self._predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_5)))
        left, top, right, bottom = (int(v) for v in np.rint(box))
        shape = self._predictor(image, dlib.rectangle(left, top, right - 1, bottom - 1))
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        landmarks.setflags(write=False)
        height, width = image.shape[:2]
        clipped = (max(left, 0), max(top, 0), min(right, width), min(bottom, height))
        return Face(clipped, landmarks, float(score), detector, float(scale))


def frontal_face_detector() -> "dlib.fhog_object_detector":
    """dlib's HOG face detector, read from a copy saved in the user's data folder: building it
    takes 0.3 to 1 s, reading the copy 2 ms (bench/startup.py); saved on first use."""
    path = data_dir() / f"dlib-{dlib.__version__}-frontal-face-detector.svm"
    try:
        return dlib.fhog_object_detector(str(path))
    except RuntimeError:  # not saved yet (or damaged): build it and save it
        detector = dlib.get_frontal_face_detector()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path)
        detector.save(str(tmp))
        move_into_place(tmp, path)
    except (OSError, RuntimeError):
        pass  # an unwritable data folder only costs the build next time
    return detector


def _detection_scale(shape: tuple[int, ...], upsample: int, max_side: int) -> float:
    """Factor the image is resized by for detection: 2**upsample, capped so the longest side
    is at most max_side (below 1 for large images)."""
    return min(2.0**upsample, max_side / max(shape[0], shape[1]))


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """The image resized by ``scale`` (bilinear up, antialiased down), unchanged at 1."""
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale > 1:
        return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    # A box reduction by an integer factor first, then Lanczos: 3x faster, no visible change.
    shrunk = Image.fromarray(image).resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return np.asarray(shrunk)


def _box_of(rect) -> np.ndarray:
    """dlib rectangle (inclusive corners) as an exclusive float box [left, top, right, bottom]."""
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], float)
