"""Camera conditions a pretrained face encoder never saw, simulated on photos or aligned chips.

Use them to measure what your camera will cost before you have its photos, or to make training
photos look like them (bench/adapt_camera.py):

- ``low_resolution``: a distant camera (CCTV) whose faces are about 24-32 pixels across, stored
  as JPEG: the image is shrunk until the face is ``face_pixels`` wide, JPEG-compressed at
  ``quality``, and enlarged back to its own size (the detector and the encoder see the lost
  detail as blur and block artefacts, as they would on the enlarged camera image).
- ``face_mask``: a surgical mask drawn over the nose and mouth, placed from dlib's 5 landmarks.

Both take and return H x W x 3 uint8 RGB arrays and leave the input unchanged. On a chip cut by
``tripletface.faces.align`` the face width is ``chip_face_width(size, padding)`` and the landmarks
are ``chip_landmarks(size, padding)``; ``on_chips`` applies a condition by its name (CONDITIONS)
to a batch of aligned chips, drawing the camera's settings per chip from a seed (what
``tripletface train --condition`` and bench/adapt_camera.py train and measure on).
"""

import io

import numpy as np
from PIL import Image, ImageDraw

from tripletface.data.images import require_rgb
from tripletface.errors import InputError
from tripletface.faces.align import DLIB_CHIP_PADDING, DLIB_CHIP_SIZE, chip_landmarks

#: The mask's outline in face units: x along the eyes (from their midpoint, towards the image's
#: right), y down from the eyes, both in eye-to-nose-base distances; from the bridge of the nose
#: over the cheeks to below the chin.
MASK_OUTLINE = (
    (-1.25, 0.55),
    (-0.45, 0.4),
    (0.45, 0.4),
    (1.25, 0.55),
    (1.2, 1.35),
    (0.7, 1.85),
    (0.0, 2.05),
    (-0.7, 1.85),
    (-1.2, 1.35),
)
#: Light blue-grey, the colour of the commonest masks.
MASK_COLOUR = (182, 204, 222)
#: Names of the conditions ``on_chips`` simulates.
CONDITIONS = ("low-resolution", "mask")
#: Ranges a "low-resolution" chip's camera is drawn from: face width in pixels, JPEG quality.
LOW_RESOLUTION_PIXELS = (24.0, 32.0)
LOW_RESOLUTION_QUALITY = (30, 70)


def chip_face_width(size: int = DLIB_CHIP_SIZE, padding: float = DLIB_CHIP_PADDING) -> float:
    """Width in pixels of the face (the landmark template's unit square) in an aligned chip."""
    return size / (1 + 2 * padding)


def low_resolution(
    image: np.ndarray, face_width: float, face_pixels: float = 28, quality: int = 50
) -> np.ndarray:
    """The image as a camera that sees the face ``face_pixels`` wide would give it (JPEG at
    ``quality``), enlarged back to the image's own size; ``face_width`` is the face's width in
    ``image`` pixels."""
    image = require_rgb(image, "low_resolution")
    if not face_width > 0 or not face_pixels > 0:
        raise InputError(f"face widths must be > 0, got {face_width} and {face_pixels}")
    if not 1 <= int(quality) <= 95:
        raise InputError(f"JPEG quality must be 1-95, got {quality}")
    height, width = image.shape[:2]
    scale = min(1.0, face_pixels / face_width)
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrunk = Image.fromarray(image).resize(small, Image.Resampling.BOX)
    stream = io.BytesIO()
    shrunk.save(stream, "JPEG", quality=int(quality))
    stream.seek(0)
    with Image.open(stream) as decoded:
        enlarged = decoded.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(enlarged).copy()


def mask_polygon(landmarks: np.ndarray) -> np.ndarray:
    """K x 2 (x, y) image pixels of MASK_OUTLINE on the face of dlib's 5 x 2 landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise InputError(f"landmarks must be a finite 5 x 2 array, got shape {points.shape}")
    right_eye, left_eye = points[:2].mean(axis=0), points[2:4].mean(axis=0)
    eyes = (right_eye + left_eye) / 2
    across = right_eye - left_eye
    across /= np.linalg.norm(across) or 1.0
    down = np.array([-across[1], across[0]])
    if down @ (points[4] - eyes) < 0:
        down = -down
    unit = abs(down @ (points[4] - eyes)) or np.linalg.norm(right_eye - left_eye) / 2
    outline = np.array(MASK_OUTLINE)
    return eyes + unit * (outline[:, :1] * across + outline[:, 1:] * down)


def face_mask(
    image: np.ndarray, landmarks: np.ndarray, colour: tuple[int, int, int] = MASK_COLOUR
) -> np.ndarray:
    """The image with a mask of ``colour`` drawn over the nose and mouth of the face whose dlib
    5 x 2 landmarks are given."""
    image = require_rgb(image, "face_mask")
    drawn = Image.fromarray(image)
    ImageDraw.Draw(drawn).polygon([tuple(p) for p in mask_polygon(landmarks)], fill=colour)
    return np.asarray(drawn).copy()


def check_condition(name: str) -> str:
    """``name`` if it is one of CONDITIONS, else InputError listing them."""
    if name not in CONDITIONS:
        raise InputError(f"unknown camera condition {name!r}: use one of {', '.join(CONDITIONS)}")
    return name


def on_chips(
    name: str, chips: np.ndarray, seed: int = 0, padding: float = DLIB_CHIP_PADDING
) -> np.ndarray:
    """N x S x S x 3 uint8 aligned chips (dlib's ``padding``) in condition ``name``: for
    "low-resolution" each chip's face width and JPEG quality are drawn uniformly from
    LOW_RESOLUTION_PIXELS and LOW_RESOLUTION_QUALITY by a generator seeded with ``seed``;
    "mask" draws the mask from the chip's landmark template."""
    check_condition(name)
    chips = np.asarray(chips)
    if chips.ndim != 4 or chips.shape[1] != chips.shape[2] or chips.shape[3] != 3:
        raise InputError(f"chips must be N x S x S x 3, got shape {chips.shape}")
    size = chips.shape[1]
    rng = np.random.default_rng(seed)
    if name == "mask":
        landmarks = chip_landmarks(size, padding)
        changed = [face_mask(chip, landmarks) for chip in chips]
    else:
        width, (low, high), (worst, best) = (
            chip_face_width(size, padding),
            LOW_RESOLUTION_PIXELS,
            LOW_RESOLUTION_QUALITY,
        )
        changed = [
            low_resolution(chip, width, rng.uniform(low, high), int(rng.integers(worst, best + 1)))
            for chip in chips
        ]
    return np.stack(changed) if changed else chips.copy()
