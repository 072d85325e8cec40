"""Aligned face chips in dlib's convention, pixel for pixel the chips dlib cuts.

dlib's ``get_face_chip`` fits a similarity transform (Umeyama 1991, least squares) from a canonical
5-point template, scaled into the chip by ``padding``, onto the detected landmarks; it turns that
transform into a rotated rectangle in the image and samples it bilinearly, after halving the image
with a binomial pyramid when the rectangle is much larger than the chip. The fit and the
rectangle are computed here, in numpy, so that any landmarks work (float ones too, which dlib's
own call does not take) and the geometry can be tested; the sampling is dlib's
``extract_image_chip``, in C++, so that a chip costs about what dlib's own call does
(bench/startup.py). The pretrained ResNet encoder was trained on exactly these chips.
"""

from collections.abc import Sequence
from typing import Protocol

import dlib
import numpy as np

from tripletface.data.images import require_rgb
from tripletface.errors import InputError

# dlib's mean 5-point face in the unit square, in its predictor's order: the two corners of the
# eye on the image's right (outer, inner), the two of the eye on the left (outer, inner), the base
# of the nose.
TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25


class HasLandmarks(Protocol):
    """Anything with 5 x 2 landmarks in image pixels, such as ``faces.detect.Face``."""

    landmarks: np.ndarray


def chip_landmarks(size: int = DLIB_CHIP_SIZE, padding: float = DLIB_CHIP_PADDING) -> np.ndarray:
    """5 x 2 (x, y) chip pixels where alignment aims the landmarks (TEMPLATE_5's order)."""
    _check_chip_args(size, padding)
    return (padding + TEMPLATE_5) / (2 * padding + 1) * size


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2 x 3 matrix [s R | t] minimising sum |s R source_i + t - target_i|^2 (Umeyama 1991)."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    centred_s, centred_t = source - mean_s, target - mean_t
    variance_s = (centred_s**2).sum() / len(source)
    covariance = centred_t.T @ centred_s / len(source)
    u, d, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = (d * signs).sum() / variance_s if variance_s > 0 else 1.0
    return np.hstack([scale * rotation, (mean_t - scale * rotation @ mean_s)[:, None]])


def chip_to_image_transform(
    landmarks: np.ndarray, size: int = DLIB_CHIP_SIZE, padding: float = DLIB_CHIP_PADDING
) -> np.ndarray:
    """2 x 3 affine map from chip pixel (x, y) to image pixel, exactly as dlib samples the chip.

    dlib keeps the fitted rotation and the image point under the chip's centre, but stretches the
    rectangle so that chip pixels 0 and size-1 land on its edges; the result differs from the plain
    similarity fit by a fraction of a pixel.
    """
    rectangle_centre, angle, width = _chip_rectangle(landmarks, size, padding)
    return _rectangle_to_affine(rectangle_centre, angle, width, size)


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int = DLIB_CHIP_SIZE,
    padding: float = DLIB_CHIP_PADDING,
) -> np.ndarray:
    """size x size x 3 uint8 chip of the face whose 5 x 2 landmarks are given, as dlib cuts it."""
    image = np.ascontiguousarray(require_rgb(image, "align_face"))
    centre, angle, width = _chip_rectangle(landmarks, size, padding)
    half = (width - 1) / 2
    rectangle = dlib.drectangle(
        centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half
    )
    chip = dlib.chip_details(rectangle, dlib.chip_dims(size, size), angle)
    return dlib.extract_image_chip(image, chip)


def face_chips(
    image: np.ndarray,
    faces: Sequence[HasLandmarks],
    size: int = DLIB_CHIP_SIZE,
    padding: float = DLIB_CHIP_PADDING,
) -> np.ndarray:
    """N x size x size x 3 uint8 chips, one per face (each cut exactly as ``align_face`` does)."""
    _check_chip_args(size, padding)
    chips = [align_face(image, face.landmarks, size, padding) for face in faces]
    return np.stack(chips) if chips else np.zeros((0, size, size, 3), dtype=np.uint8)


def _check_chip_args(size: int, padding: float) -> None:
    if int(size) != size or size < 2:
        raise InputError(f"chip size must be an integer >= 2, got {size!r}")
    if not padding >= 0:
        raise InputError(f"chip padding must be >= 0, got {padding!r}")


def _chip_rectangle(
    landmarks: np.ndarray, size: int, padding: float
) -> tuple[np.ndarray, float, float]:
    """(centre in image pixels, angle in radians, side in image pixels) of dlib's chip rectangle."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2) or not np.all(np.isfinite(landmarks)):
        raise InputError(
            f"landmarks must be a finite 5 x 2 array (dlib's 5-point order), got shape "
            f"{landmarks.shape}"
        )
    fit = similarity_transform(chip_landmarks(size, padding), landmarks)
    column = fit[:, 0]
    centre = fit[:, :2] @ np.array([size / 2, size / 2]) + fit[:, 2]
    return centre, float(np.arctan2(column[1], column[0])), float(np.hypot(*column)) * size


def _rectangle_to_affine(centre: np.ndarray, angle: float, width: float, size: int) -> np.ndarray:
    """Affine chip -> image taking chip corners to a square of side ``width`` (dlib's inclusive
    convention: corners at centre +- (width - 1) / 2) rotated by ``angle`` about its centre."""
    cos, sin = np.cos(angle), np.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]]) * ((width - 1) / (size - 1))
    offset = centre - linear @ np.full(2, (size - 1) / 2)
    return np.hstack([linear, offset[:, None]])
