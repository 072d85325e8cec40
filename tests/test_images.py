"""Loading every supported image kind as H x W x 3 uint8 RGB; broken files refused clearly."""

import io
import os
import stat
from collections.abc import Iterator

import numpy as np
import pytest
import skimage.data
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from tripletface.data.images import (
    IMAGE_EXTENSIONS,
    draw_labelled_boxes,
    load_image,
    require_rgb,
    save_image_atomic,
)
from tripletface.errors import InputError


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo small enough to encode in every format quickly (the astronaut's head)."""
    return np.ascontiguousarray(skimage.data.astronaut()[40:200, 150:310])


def _assert_rgb(array: np.ndarray, shape: tuple[int, int]) -> None:
    assert array.dtype == np.uint8
    assert array.shape == (*shape, 3)
    assert array.flags.c_contiguous


@pytest.mark.parametrize("suffix", [".png", ".webp", ".ppm", ".bmp", ".tif"])
def test_lossless_formats_round_trip(tmp_path, photo, suffix):
    path = tmp_path / f"face{suffix}"
    Image.fromarray(photo).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    loaded = load_image(path)
    _assert_rgb(loaded, photo.shape[:2])
    np.testing.assert_array_equal(loaded, photo)


def test_jpeg_loads_close_to_the_original(tmp_path, photo):
    path = tmp_path / "face.jpg"
    Image.fromarray(photo).save(path, quality=95)
    loaded = load_image(str(path))
    _assert_rgb(loaded, photo.shape[:2])
    assert np.abs(loaded.astype(int) - photo).mean() < 3


def test_pgm_grayscale_becomes_three_equal_channels(tmp_path):
    gray = skimage.data.camera()[::4, ::4]
    path = tmp_path / "camera.pgm"
    Image.fromarray(gray).save(path)
    loaded = load_image(path)
    _assert_rgb(loaded, gray.shape)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[:, :, channel], gray)


@pytest.mark.parametrize("suffix", [".png", ".pgm"])
def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path, suffix):
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(ramp).save(path)
    loaded = load_image(path)[:, :, 0].astype(int)
    np.testing.assert_array_equal(loaded, np.rint(ramp * 255.0 / 65535.0).astype(int))
    assert loaded.min() == 0 and loaded.max() == 255


def test_exif_orientation_is_applied(tmp_path, photo):
    # Orientation 6: the camera was turned, a viewer rotates the stored pixels 90 degrees clockwise.
    stored = np.ascontiguousarray(photo[:, :120])
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    loaded = load_image(path)
    upright = np.rot90(stored, k=-1)
    assert loaded.shape == upright.shape
    assert np.abs(loaded.astype(int) - upright).mean() < 3


def test_rgba_is_composited_on_white(tmp_path, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:10, :, 3] = 0
    rgba[10:20, :, 3] = 128
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba).save(path)
    loaded = load_image(path)
    assert (loaded[:10] == 255).all()
    half = np.rint(photo[10:20] * (128 / 255) + 255 * (127 / 255))
    np.testing.assert_allclose(loaded[10:20], half, atol=1)
    np.testing.assert_array_equal(loaded[20:], photo[20:])


def test_palette_gif_gives_its_first_frame(tmp_path, photo):
    frames = [Image.fromarray(photo).quantize(64), Image.fromarray(255 - photo).quantize(64)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    loaded = load_image(path)
    _assert_rgb(loaded, photo.shape[:2])
    np.testing.assert_array_equal(loaded, np.asarray(frames[0].convert("RGB")))


def test_transparent_palette_pixels_become_white(tmp_path):
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.putpixel((0, 0), 0)
    path = tmp_path / "icon.png"
    palette.save(path, transparency=0)
    loaded = load_image(path)
    assert tuple(loaded[0, 0]) == (255, 255, 255)
    assert tuple(loaded[4, 4]) == (200, 30, 30)


@pytest.mark.parametrize(
    ("mode", "transparent", "opaque", "colour"),
    [
        ("1", 0, 1, (255, 255, 255)),
        ("L", 0, 200, (200, 200, 200)),
        ("RGB", (0, 0, 0), (200, 30, 30), (200, 30, 30)),
        ("I;16", 0, 40000, (156, 156, 156)),  # 40000 * 255 / 65535 rounds to 156
    ],
    ids=["1", "L", "RGB", "I;16"],
)
def test_colour_keyed_transparent_pixels_become_white(tmp_path, mode, transparent, opaque, colour):
    keyed = Image.new(mode, (8, 8), opaque)
    keyed.putpixel((0, 0), transparent)
    path = tmp_path / "keyed.png"
    keyed.save(path, transparency=transparent)
    loaded = load_image(path)
    assert tuple(loaded[0, 0]) == (255, 255, 255)
    assert tuple(loaded[4, 4]) == colour


def test_wrong_extension_with_valid_content_loads(tmp_path, photo):
    path = tmp_path / "actually_png.jpg"
    Image.fromarray(photo).save(path, format="PNG")
    np.testing.assert_array_equal(load_image(path), photo)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.jpg", b"these are not pixels\n" * 10),
        ("empty.png", b""),
    ],
)
def test_non_images_are_refused_with_the_path(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=name):
        load_image(path)


def test_corrupt_and_truncated_files_are_refused(tmp_path, photo):
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG")
    whole = buffer.getvalue()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole[: len(whole) // 2])
    corrupt = tmp_path / "corrupt.png"
    png = io.BytesIO()
    Image.fromarray(photo).save(png, format="PNG")
    data = bytearray(png.getvalue())
    data[60:400] = bytes(340)
    corrupt.write_bytes(bytes(data))
    for path in (truncated, corrupt):
        with pytest.raises(InputError, match=path.name):
            load_image(path)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(InputError, match="no such image"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)


def test_pil_modes_convert(photo):
    image = Image.fromarray(photo)
    for mode in ("L", "LA", "P", "CMYK", "1", "I", "F"):
        loaded = load_image(image.convert(mode))
        _assert_rgb(loaded, photo.shape[:2])
    gray = np.asarray(image.convert("L"))
    np.testing.assert_array_equal(load_image(image.convert("L"))[:, :, 1], gray)


@given(arrays(np.float64, (5, 7, 3), elements=st.floats(0, 1)))
def test_float_arrays_in_unit_range_are_scaled(values):
    np.testing.assert_array_equal(load_image(values), np.rint(values * 255).astype(np.uint8))


def test_float_arrays_on_0_255_are_kept_and_others_refused():
    values = np.array([[[0.0, 128.4, 255.0]]])
    np.testing.assert_array_equal(load_image(values), [[[0, 128, 255]]])
    for bad in (np.array([[[-0.5, 0, 0]]]), np.array([[[0, 300.0, 0]]]), np.full((2, 2), np.nan)):
        with pytest.raises(InputError):
            load_image(bad)


def test_array_shapes_and_dtypes():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(load_image(gray), np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(load_image(gray[:, :, None]), load_image(gray))
    deep = np.array([[0, 257, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(load_image(deep)[0, :, 0], [0, 1, 255])
    mask = np.array([[True, False]])
    np.testing.assert_array_equal(load_image(mask)[0, :, 0], [255, 0])
    for bad in (np.zeros((2, 2, 2)), np.zeros((2,)), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(InputError):
            load_image(bad)
    with pytest.raises(InputError):
        load_image(42)


def test_non_contiguous_view_is_copied(photo):
    view = photo[:, ::-1]
    loaded = load_image(view)
    assert loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, view)


def test_save_image_atomic_round_trips_and_leaves_no_temporary(tmp_path, photo):
    path = save_image_atomic(tmp_path / "chip.png", photo)
    np.testing.assert_array_equal(load_image(path), photo)
    assert [p.name for p in tmp_path.iterdir()] == ["chip.png"]
    with pytest.raises(InputError, match="suffix"):
        save_image_atomic(tmp_path / "chip.xyz", photo)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The process umask set to 022 for the test, then restored."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("umask_022")
def test_save_image_atomic_gives_the_mode_the_umask_allows(tmp_path, photo):
    path = save_image_atomic(tmp_path / "snapshot.png", photo)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_image_extensions_are_lower_case_suffixes():
    assert {".jpg", ".jpeg", ".png", ".pgm", ".gif", ".webp"} <= IMAGE_EXTENSIONS
    assert all(s.startswith(".") and s == s.lower() for s in IMAGE_EXTENSIONS)


def test_require_rgb_accepts_only_uint8_rgb(photo):
    view = photo[:, ::-1]
    checked = require_rgb(view, "the test")
    assert checked.flags.c_contiguous
    np.testing.assert_array_equal(checked, view)
    for bad in (photo[:, :, 0], photo.astype(np.float32), [[1, 2, 3]]):
        with pytest.raises(InputError, match="the test needs"):
            require_rgb(bad, "the test")


def test_labelled_boxes_are_green_when_known_red_when_not_and_leave_the_input():
    image = np.zeros((120, 200, 3), np.uint8)
    drawn = draw_labelled_boxes(
        image, [(10, 30, 60, 90), (120, 30, 180, 90)], ["ada", "?"], [True, False]
    )
    assert image.max() == 0  # a copy
    assert tuple(drawn[60, 10]) == (40, 200, 60) and tuple(drawn[60, 120]) == (230, 50, 40)
    assert drawn[60, 35].max() == 0  # inside a box nothing is drawn
