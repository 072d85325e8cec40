"""Uploaded photos to faces, in the detection worker processes: decode, check, detect, cut chips.

Everything that costs CPU time for one request happens here, away from the server's event loop:
base64 decoding, image decoding and face detection. Nothing here imports torch (the workers are
forked before it loads) and nothing touches the file system: bytes in, arrays out.
"""

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tripletface.data.images import load_image
from tripletface.errors import InputError
from tripletface.faces.extract import Box, ChipMaker

#: Images with more pixels are refused before they are decoded (decompression bombs).
MAX_PIXELS = 40_000_000
#: The only formats an upload is opened as. Pillow knows more, and some are unsafe on untrusted
#: bytes: an EPS file is rendered by running Ghostscript on it, through a temporary file.
#: (Pillow opens the MPO files of many phones and cameras as JPEG.)
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


class NotAnImageError(InputError):
    """The upload is not in an image format that can be read (HTTP 415)."""


class TooLargeError(InputError):
    """The upload or the image it holds is larger than the server accepts (HTTP 413)."""


@dataclass(frozen=True)
class Detected:
    """The faces of one uploaded photo: boxes, N x S x S x 3 uint8 chips, SHA-256 of its bytes."""

    boxes: list[Box]
    chips: np.ndarray
    digest: str


def detect_upload(maker: ChipMaker, data: bytes, base64_text: bool = False) -> Detected:
    """The faces of an uploaded photo (raw bytes, or base64 text when ``base64_text``)."""
    if base64_text:
        data = decode_base64(data)
    image = decode_image(data)
    boxes, chips = maker(image)
    return Detected(boxes, chips, hashlib.sha256(data).hexdigest())


def decode_base64(text: bytes) -> bytes:
    """The bytes of a base64 field (a data: URL prefix is allowed); InputError if malformed."""
    if text.startswith(b"data:"):
        text = text.partition(b",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(
            "image: not valid base64; send the file's bytes base64-encoded, "
            "or upload it as multipart/form-data"
        ) from None


def decode_image(data: bytes) -> np.ndarray:
    """H x W x 3 uint8 RGB pixels of an encoded image, its size checked before decoding."""
    try:
        opened = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise _too_many_pixels() from None
    except (OSError, SyntaxError, ValueError):
        raise NotAnImageError(
            "image: not a format that can be read; send a JPEG, PNG, WebP, GIF, BMP or TIFF file"
        ) from None
    with opened:
        if opened.width * opened.height > MAX_PIXELS:
            raise _too_many_pixels(opened.width, opened.height)
        try:
            opened.load()
            return load_image(opened)
        except InputError:
            raise
        except Image.DecompressionBombError:
            raise _too_many_pixels() from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise InputError(
                f"image: cannot be decoded ({error}); the file is corrupt or truncated: "
                "re-export it as JPEG or PNG"
            ) from None


def _too_many_pixels(width: int | None = None, height: int | None = None) -> TooLargeError:
    size = f" ({width} x {height})" if width else ""
    return TooLargeError(
        f"image: more than {MAX_PIXELS // 1_000_000} megapixels{size}; downscale it before sending"
    )
