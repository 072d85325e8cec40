"""Camera conditions: a distant JPEG camera and a drawn face mask, on the astronaut's chip."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from tripletface.data.conditions import (
    CONDITIONS,
    LOW_RESOLUTION_PIXELS,
    LOW_RESOLUTION_QUALITY,
    MASK_COLOUR,
    chip_face_width,
    face_mask,
    low_resolution,
    mask_polygon,
    on_chips,
)
from tripletface.errors import InputError
from tripletface.faces.align import TEMPLATE_5, chip_landmarks, face_chips


@pytest.fixture(scope="module")
def chip(astronaut, hog):
    """The astronaut's aligned 150 x 150 chip."""
    return face_chips(astronaut, hog.detect(astronaut)[:1])[0]


def test_a_chip_face_is_its_template_square():
    points = chip_landmarks(150, 0.25)
    assert chip_face_width(150, 0.25) == pytest.approx(100)
    # The template spans most of the unit square: corner to corner about 0.74 of a face width.
    assert np.ptp(points[:, 0]) == pytest.approx(np.ptp(TEMPLATE_5[:, 0]) * 100)


def test_low_resolution_keeps_the_size_and_loses_the_detail(chip):
    out = low_resolution(chip, chip_face_width(), face_pixels=28, quality=50)
    assert out.shape == chip.shape and out.dtype == np.uint8 and not np.shares_memory(out, chip)

    # The face went through a 42 x 42 image: the result is that image enlarged, so its
    # highest frequencies are gone (the mean gradient drops) while the colours stay.
    def detail(image):
        return np.abs(np.diff(image.astype(float), axis=1)).mean()

    assert detail(out) < 0.75 * detail(chip)
    sharper = low_resolution(chip, chip_face_width(), face_pixels=60, quality=50)
    assert detail(out) < detail(sharper) < detail(chip)
    assert np.abs(out.astype(int) - chip).mean() > np.abs(sharper.astype(int) - chip).mean()
    assert np.abs(out.astype(float).mean((0, 1)) - chip.mean((0, 1))).max() < 4
    # A face already as small as asked is only JPEG-compressed.
    same = low_resolution(chip, 20, face_pixels=28, quality=95)
    assert np.abs(same.astype(int) - chip).mean() < 3
    with pytest.raises(InputError, match="quality"):
        low_resolution(chip, 100, quality=0)
    with pytest.raises(InputError, match="widths"):
        low_resolution(chip, 0)


def test_the_mask_covers_nose_and_mouth_and_spares_the_eyes(chip):
    points = chip_landmarks()
    masked = face_mask(chip, points)
    assert masked.shape == chip.shape and not np.array_equal(masked, chip)
    colour = np.array(MASK_COLOUR)
    nose = np.rint(points[4]).astype(int)
    mouth = np.rint(points[4] + [0, 20]).astype(int)  # 20 px below the nose base
    for x, y in (nose, mouth):
        assert np.array_equal(masked[y, x], colour)
    for x, y in np.rint(points[:4]).astype(int):
        assert np.array_equal(masked[y, x], chip[y, x])
    assert np.array_equal(masked[:40], chip[:40])  # nothing above the eyes changes


@given(
    st.floats(-np.pi, np.pi),
    st.floats(0.3, 3.0),
    st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
)
def test_the_mask_moves_with_the_face(angle, scale, shift):
    """A similarity transform of the landmarks moves the mask's outline by the same transform."""
    points = chip_landmarks()
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points @ rotation.T + shift
    assert mask_polygon(moved) == pytest.approx(mask_polygon(points) @ rotation.T + shift, abs=1e-6)


def test_the_mask_is_the_polygon_drawn(chip):
    points = chip_landmarks()
    expected = Image.fromarray(chip)
    ImageDraw.Draw(expected).polygon([tuple(p) for p in mask_polygon(points)], fill=MASK_COLOUR)
    assert np.array_equal(face_mask(chip, points), np.asarray(expected))
    with pytest.raises(InputError, match="5 x 2"):
        face_mask(chip, points[:4])


def test_conditions_on_chips_draw_a_camera_per_chip_from_the_seed(chip):
    chips = np.stack([chip, chip[:, ::-1], chip])
    masked = on_chips("mask", chips)
    for original, out in zip(chips, masked, strict=True):
        assert np.array_equal(out, face_mask(original, chip_landmarks()))

    changed = on_chips("low-resolution", chips, seed=3)
    assert changed.shape == chips.shape and changed.dtype == np.uint8
    assert np.array_equal(changed, on_chips("low-resolution", chips, seed=3))
    # The same chip twice gets two cameras of its own: the draws of the seeded generator.
    rng = np.random.default_rng(3)
    for original, out in zip(chips, changed, strict=True):
        pixels = rng.uniform(*LOW_RESOLUTION_PIXELS)
        quality = int(rng.integers(LOW_RESOLUTION_QUALITY[0], LOW_RESOLUTION_QUALITY[1] + 1))
        assert np.array_equal(out, low_resolution(original, chip_face_width(), pixels, quality))
    assert not np.array_equal(changed[0], changed[2])
    assert set(CONDITIONS) == {"low-resolution", "mask"}
    with pytest.raises(InputError, match=r"unknown camera condition 'blur'.*low-resolution, mask"):
        on_chips("blur", chips)
    with pytest.raises(InputError, match="N x S x S x 3"):
        on_chips("mask", chips[0])
