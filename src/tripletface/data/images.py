"""Images in and out: every supported file or array becomes one H x W x 3 uint8 RGB array.

Conventions (the one place they are decided):
- Transparency is composited onto white, not dropped: the colour hidden under a transparent pixel
  is arbitrary (often black), while white is what a viewer shows behind a cut-out portrait.
- 16-bit samples are scaled to 8 bits by rounding ``v * 255 / 65535``; nothing is clipped.
- Float arrays are read as [0, 1] when every value lies in [0, 1], otherwise as 0-255; values
  outside [0, 255] are refused rather than guessed at.
- EXIF orientation is applied, so an array is upright as a viewer shows the photo.
- GIF and other multi-frame files give their first frame.
"""

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from tripletface.cache import write_atomic
from tripletface.errors import InputError

# Suffixes that folder scans treat as images (lower case). Loading itself sniffs the content.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".pnm", ".gif", ".webp", ".bmp", ".tif",
     ".tiff"}
)  # fmt: skip

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
# Modes whose info["transparency"] colour Pillow's convert("RGBA") turns into alpha.
_COLOUR_KEY_MODES = {"1", "L", "P", "RGB"}
_WHITE = 255.0


def load_image(source: str | Path | Image.Image | np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB C-contiguous array from a path, a PIL image or an array.

    Raises InputError naming the file (or the array's problem) when it cannot be read.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, "array")
    if isinstance(source, Image.Image):
        return _from_pil(source, "PIL image")
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source))
    raise InputError(
        f"cannot load an image from a {type(source).__name__}: give a path, a PIL image "
        "or a numpy array"
    )


def require_rgb(image: np.ndarray, user: str) -> np.ndarray:
    """``image`` as a C-contiguous H x W x 3 uint8 array; InputError naming ``user`` otherwise."""
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
    ):
        described = (
            f"{image.dtype} array of shape {image.shape}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise InputError(
            f"{user} needs an H x W x 3 uint8 RGB array, got a {described}: "
            "convert it with tripletface.data.images.load_image"
        )
    return np.ascontiguousarray(image)


def save_image_atomic(path: str | Path, image: np.ndarray | Image.Image) -> Path:
    """Write ``image`` to ``path`` in the format its suffix names, atomically; returns the path."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise InputError(
            f"{path}: unknown image suffix {path.suffix!r}; use one of "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    pixels = Image.fromarray(load_image(image))
    return write_atomic(path, lambda stream: pixels.save(stream, format=image_format), sync=False)


def _from_path(path: Path) -> np.ndarray:
    """Decode a file by its content (not its suffix), first frame, EXIF orientation applied."""
    if not path.exists():
        raise InputError(f"{path}: no such image file; check the path")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file; give one image file")
    try:
        with Image.open(path) as image:
            image.load()
            return _from_pil(image, str(path))
    except InputError:
        raise
    except Image.DecompressionBombError as error:
        raise InputError(
            f"{path}: image too large to decode safely ({error}); downscale it"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(
            f"{path}: not a readable image ({error}); the file is corrupt, truncated or not an "
            "image: re-export it as JPEG or PNG"
        ) from None


def _from_pil(image: Image.Image, name: str) -> np.ndarray:
    """RGB uint8 array of a PIL image, EXIF-rotated, with alpha composited onto white."""
    image = ImageOps.exif_transpose(image)
    if image.width == 0 or image.height == 0:
        raise InputError(f"{name}: the image is empty (0 pixels)")
    # A tRNS chunk gives these modes a transparent colour in info instead of an alpha band.
    if image.mode in _COLOUR_KEY_MODES and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        return _from_array(np.asarray(image.convert("RGBA")), name)
    if image.mode.startswith("I"):
        samples = _as_uint16(np.asarray(image), name)
        if "transparency" in image.info:
            # Built here because convert("RGBA") would clip 16-bit samples to 255, not scale them.
            alpha = np.where(samples == image.info["transparency"], 0, 65535).astype(np.uint16)
            samples = np.dstack([samples, samples, samples, alpha])
        return _from_array(samples, name)
    if image.mode == "F":
        return _from_array(np.asarray(image), name)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _as_uint16(values: np.ndarray, name: str) -> np.ndarray:
    """16-bit samples of an integer-mode image (Pillow opens 16-bit PGM files as 32-bit "I")."""
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise InputError(f"{name}: 32-bit integer samples outside 0-65535; save it as 8 or 16 bit")
    return values.astype(np.uint16)


def _from_array(array: np.ndarray, name: str) -> np.ndarray:
    """RGB uint8 from an H x W, H x W x 1, H x W x 3 or H x W x 4 array of any numeric dtype."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(
            f"{name}: expected an H x W, H x W x 3 (RGB) or H x W x 4 (RGBA) image, "
            f"got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{name}: the image is empty (shape {array.shape})")
    values = _to_0_255(array, name)
    if values.shape[2] == 4:
        alpha = values[:, :, 3:] / 255.0
        values = values[:, :, :3] * alpha + _WHITE * (1.0 - alpha)
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    if values.dtype != np.uint8:
        values = np.rint(values).astype(np.uint8)
    return np.ascontiguousarray(values)


def _to_0_255(array: np.ndarray, name: str) -> np.ndarray:
    """Samples on the 0-255 scale (uint8 kept as is, others as float64)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.float64) * 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float64) * (255.0 / 65535.0)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{name}: unsupported pixel type {array.dtype}; use uint8 or float")
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{name}: the image contains NaN or infinite values")
    low, high = values.min(), values.max()
    if low < 0 or high > 255:
        raise InputError(
            f"{name}: {array.dtype} values span [{low:g}, {high:g}]; expected [0, 1] or [0, 255] "
            "(16-bit images must be uint16)"
        )
    if np.issubdtype(array.dtype, np.floating) and high <= 1.0:
        return values * 255.0
    return values


def person_images(root: Path) -> dict[str, list[Path]]:
    """Image files of each person folder under root, both in sorted name order."""
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give a folder holding one sub-folder per person")
    persons = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p
            for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
        )
        if files:
            persons[folder.name] = files
    return persons


def draw_labelled_boxes(
    image: np.ndarray,
    boxes: Sequence[tuple[int, int, int, int]],
    labels: Sequence[str],
    known: Sequence[bool],
) -> np.ndarray:
    """A copy of the H x W x 3 RGB image with each (left, top, right, bottom) box outlined and
    labelled above it: green where ``known``, red where not."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 300))
    for box, label, is_known in zip(boxes, labels, known, strict=True):
        colour = (40, 200, 60) if is_known else (230, 50, 40)
        draw.rectangle(box, outline=colour, width=width)
        corner = (box[0], max(0, box[1] - 12))
        draw.rectangle(draw.textbbox(corner, label), fill=colour)
        draw.text(corner, label, fill=(255, 255, 255))
    return np.asarray(picture)
