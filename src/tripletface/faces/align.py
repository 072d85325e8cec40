"""Aligned face chips in dlib's convention, computed in numpy so they match dlib pixel for pixel.

dlib's ``get_face_chip`` fits a similarity transform (Umeyama 1991, least squares) from a canonical
5-point template, scaled into the chip by ``padding``, onto the detected landmarks; it turns that
transform into a rotated rectangle in the image and samples it bilinearly. When the rectangle is
much larger than the chip it first halves the image with a 5-tap binomial pyramid so that the
bilinear samples do not alias. Every rounding step below follows dlib (``interpolation.h``,
``image_pyramid.h``) because the pretrained ResNet encoder was trained on exactly these chips.
"""

from collections.abc import Sequence
from typing import Protocol

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

_BINOMIAL_5 = np.array([1, 4, 6, 4, 1], dtype=np.int64)
# Where dlib's 2x pyramid puts an input point in the downsampled image: p / 2 - offset.
_PYRAMID_OFFSET = np.array([1.25, 0.75])


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
    image = require_rgb(image, "align_face")
    centre, angle, width = _chip_rectangle(landmarks, size, padding)
    levels = _pyramid_levels(width, size)
    if levels == 0:
        return _sample_bilinear(image, _rectangle_to_affine(centre, angle, width, size), size)
    left, top, source = _pyramid_source(image, centre, angle, width, levels)
    corner = np.array([left, top], dtype=np.float64)
    # dlib maps the rectangle's corners down the pyramid one level at a time.
    low, high = centre - (width - 1) / 2 - corner, centre + (width - 1) / 2 - corner
    for _ in range(levels):
        low, high = low / 2 - _PYRAMID_OFFSET, high / 2 - _PYRAMID_OFFSET
    level_width = high[0] - low[0] + 1
    level_centre = (low + high) / 2
    transform = _rectangle_to_affine(level_centre, angle, level_width, size)
    return _sample_bilinear(source, transform, size)


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


def _pyramid_levels(width: float, size: int) -> int:
    """How many 2x pyramid halvings dlib applies before sampling a chip of this rectangle side."""
    levels = 0
    side = width
    # rect_down shifts both corners equally, so only the side length matters: (side - 1) / 2 + 1.
    while ((side - 1) / 2 + 1) ** 2 > size * size:
        side = (side - 1) / 2 + 1
        levels += 1
    return levels


def _pyramid_source(
    image: np.ndarray, centre: np.ndarray, angle: float, width: float, levels: int
) -> tuple[int, int, np.ndarray]:
    """(left, top, image) of the cropped region dlib downsamples ``levels`` times for this chip."""
    half = (width - 1) / 2
    corners = np.array([[-half, -half], [half, -half], [-half, half], [half, half]])
    cos, sin = np.cos(angle), np.sin(angle)
    rotated = corners @ np.array([[cos, sin], [-sin, cos]]) + centre
    grow = 2.0
    for _ in range(levels):
        grow = grow * 2 + 2
    low = np.maximum(rotated.min(axis=0) - grow, 0)
    high = np.minimum(rotated.max(axis=0) + grow, [image.shape[1] - 1, image.shape[0] - 1])
    left, top = np.floor(low + 0.5).astype(int)
    right, bottom = np.floor(high + 0.5).astype(int)
    source = image[top : bottom + 1, left : right + 1]
    for _ in range(levels):
        source = _pyramid_down(source)
    return int(left), int(top), source


def _pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib's pyramid_down<2>: 5-tap binomial filter, every other pixel, integer division by 256."""
    rows, cols = image.shape[:2]
    if rows <= 8 or cols <= 8:
        return np.zeros((0, 0, 3), dtype=np.uint8)
    out_cols = (cols - 3) // 2
    wide = image.astype(np.int64)
    horizontal = sum(w * wide[:, k : k + 2 * out_cols : 2] for k, w in enumerate(_BINOMIAL_5))
    out_rows = (rows - 3) // 2
    vertical = sum(w * horizontal[k : k + 2 * out_rows : 2] for k, w in enumerate(_BINOMIAL_5))
    return (vertical // 256).astype(np.uint8)


def _sample_bilinear(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """size x size chip with chip pixel (x, y) = bilinear image value at transform @ (x, y, 1);
    samples whose 2 x 2 neighbourhood leaves the image are black, values truncated like dlib."""
    rows, cols = image.shape[:2]
    if rows < 2 or cols < 2:  # no 2 x 2 neighbourhood at all
        return np.zeros((size, size, 3), dtype=np.uint8)
    grid = np.arange(size, dtype=np.float64)
    xs = transform[0, 0] * grid[None, :] + transform[0, 1] * grid[:, None] + transform[0, 2]
    ys = transform[1, 0] * grid[None, :] + transform[1, 1] * grid[:, None] + transform[1, 2]
    left, top = np.floor(xs), np.floor(ys)
    inside = (left >= 0) & (top >= 0) & (left + 1 < cols) & (top + 1 < rows)
    fx = (xs - left)[..., None]
    fy = (ys - top)[..., None]
    # Gathers by flat index from one row per pixel: a third faster than 2-d fancy indexing.
    corner = np.where(inside, top * cols + left, 0).astype(np.intp)
    flat = image.reshape(-1, 3)
    top_left, top_right = flat[corner].astype(np.float64), flat[corner + 1]
    bottom_left, bottom_right = flat[corner + cols], flat[corner + cols + 1]
    value = (1 - fy) * ((1 - fx) * top_left + fx * top_right) + fy * (
        (1 - fx) * bottom_left + fx * bottom_right
    )
    chip = np.clip(value, 0, 255).astype(np.uint8)
    chip[~inside] = 0
    return chip
