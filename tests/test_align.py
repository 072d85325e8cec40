"""Face chips: dlib's chips reproduced pixel for pixel, landmarks brought onto the template."""

import dlib
import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tripletface.errors import InputError
from tripletface.faces.align import (
    TEMPLATE_5,
    align_face,
    chip_landmarks,
    chip_to_image_transform,
    face_chips,
    similarity_transform,
)
from tripletface.faces.detect import FaceDetector


def _dlib_chip(image: np.ndarray, landmarks: np.ndarray, size: int, padding: float) -> np.ndarray:
    """dlib's own chip for integer landmarks (its shapes hold integer points)."""
    parts = [dlib.point(int(x), int(y)) for x, y in landmarks]
    shape = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), parts)
    return dlib.get_face_chip(image, shape, size=size, padding=padding)


def _to_chip(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """Landmarks mapped from the image into the chip by the inverse of the sampling transform."""
    forward = np.vstack([chip_to_image_transform(landmarks, size, padding), [0, 0, 1]])
    inverse = np.linalg.inv(forward)
    return landmarks @ inverse[:2, :2].T + inverse[:2, 2]


def _similar_landmarks(
    scale: float, angle: float, centre: tuple[float, float], rounded: bool = True
) -> np.ndarray:
    """The template turned, scaled to ``scale`` pixels and centred at ``centre``."""
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (TEMPLATE_5 - 0.5) * scale @ rotation.T + centre
    return np.rint(landmarks) if rounded else landmarks


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_chip_matches_dlib_on_a_real_photo(astronaut, hog):
    face = hog.detect(astronaut)[0]
    for size, padding in [(150, 0.25), (112, 0.1), (64, 0.4)]:
        chip = align_face(astronaut, face.landmarks, size, padding)
        assert chip.shape == (size, size, 3) and chip.dtype == np.uint8
        assert _mean_abs(chip, _dlib_chip(astronaut, face.landmarks, size, padding)) < 0.01


def test_chip_matches_dlib_through_its_image_pyramid(astronaut, hog):
    # A 6x enlarged face: dlib halves the region twice before sampling; so must we.
    region = astronaut[0:260, 120:330]
    large = np.asarray(Image.fromarray(region).resize((region.shape[1] * 6, region.shape[0] * 6)))
    face = hog.face_in_box(large, (330, 460, 870, 1000))
    chip = align_face(large, face.landmarks)
    assert _mean_abs(chip, _dlib_chip(large, face.landmarks, 150, 0.25)) < 0.01


@settings(max_examples=25, deadline=None)
@given(
    scale=st.floats(20, 700),
    angle=st.floats(-np.pi, np.pi),
    x=st.floats(-50, 560),
    y=st.floats(-50, 560),
    size=st.sampled_from([150, 96]),
    padding=st.sampled_from([0.25, 0.0, 0.5]),
)
def test_chip_matches_dlib_for_any_pose_scale_and_position(scale, angle, x, y, size, padding):
    image = skimage.data.astronaut()
    landmarks = _similar_landmarks(scale, angle, (x, y))
    chip = align_face(image, landmarks, size, padding)
    assert _mean_abs(chip, _dlib_chip(image, landmarks, size, padding)) < 0.01


def test_face_outside_the_image_gives_dlibs_black_chip(astronaut):
    for landmarks in (
        _similar_landmarks(120, 0.3, (-400, 200)),
        _similar_landmarks(2500, 0.0, (3000, 3000)),
    ):
        chip = align_face(astronaut, landmarks)
        np.testing.assert_array_equal(chip, _dlib_chip(astronaut, landmarks, 150, 0.25))
        assert chip.max() == 0


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(100, 2000), angle=st.floats(-np.pi, np.pi), x=st.floats(-1e3, 1e3))
def test_landmarks_of_a_template_shaped_face_land_on_the_template(scale, angle, x):
    # dlib spreads chip pixels 0..size-1 over a rectangle of side size * s - 1 (s the fitted scale),
    # a stretch of under a pixel across the chip once the face is at least chip-sized (scale 100
    # with padding 0.25 fills 150 pixels); smaller faces are enlarged and so is that stretch.
    landmarks = _similar_landmarks(scale, angle, (x, -x / 2), rounded=False)
    error = np.linalg.norm(_to_chip(landmarks) - chip_landmarks(), axis=1)
    assert error.max() < 1.0


def test_real_landmarks_land_near_the_template(astronaut, hog):
    face = hog.detect(astronaut)[0]
    fitted = np.linalg.norm(_to_chip(face.landmarks) - chip_landmarks(), axis=1)
    # A similarity cannot fit 5 real points exactly: each keeps a residual of about a pixel,
    # but their centroid, which the least-squares fit matches, lands within a pixel.
    centroid = _to_chip(face.landmarks).mean(axis=0) - chip_landmarks().mean(axis=0)
    assert np.linalg.norm(centroid) < 1.0 and fitted.max() < 2.0
    chip = align_face(astronaut, face.landmarks)
    again = hog.face_in_box(chip, (0, 0, 150, 150)).landmarks
    redetected = np.linalg.norm(again - chip_landmarks(), axis=1)
    # The predictor's landmarks are whole pixels: half a pixel more.
    assert np.linalg.norm(again.mean(axis=0) - chip_landmarks().mean(axis=0)) < 1.5
    assert redetected.max() < 2.0


def test_chip_landmarks_follow_padding():
    tight = chip_landmarks(100, 0.0)
    np.testing.assert_allclose(tight, TEMPLATE_5 * 100)
    padded = chip_landmarks(150, 0.25)
    np.testing.assert_allclose(padded, (TEMPLATE_5 + 0.25) / 1.5 * 150)


@given(
    st.floats(0.1, 10),
    st.floats(-np.pi, np.pi),
    st.tuples(st.floats(-100, 100), st.floats(-100, 100)),
    st.integers(0, 2**31 - 1),
)
def test_similarity_transform_is_the_least_squares_similarity(scale, angle, shift, seed):
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(5, 2)) * 10
    a, b = scale * np.cos(angle), scale * np.sin(angle)
    target = source @ np.array([[a, -b], [b, a]]).T + shift + rng.normal(size=(5, 2))
    # Brute-force reference: x' = a x - b y + tx, y' = b x + a y + ty is linear in (a, b, tx, ty).
    rows = np.zeros((10, 4))
    rows[0::2] = np.column_stack([source[:, 0], -source[:, 1], np.ones(5), np.zeros(5)])
    rows[1::2] = np.column_stack([source[:, 1], source[:, 0], np.zeros(5), np.ones(5)])
    ra, rb, tx, ty = np.linalg.lstsq(rows, target.reshape(-1), rcond=None)[0]
    expected = np.array([[ra, -rb, tx], [rb, ra, ty]])
    np.testing.assert_allclose(similarity_transform(source, target), expected, atol=1e-8)


def test_face_chips_batches_align_face(astronaut):
    faces = FaceDetector("hog", upsample=1).detect(astronaut)
    chips = face_chips(astronaut, faces, 80, 0.3)
    assert chips.shape == (len(faces), 80, 80, 3)
    for chip, face in zip(chips, faces, strict=True):
        np.testing.assert_array_equal(chip, align_face(astronaut, face.landmarks, 80, 0.3))
    assert face_chips(astronaut, [], 80).shape == (0, 80, 80, 3)


def test_bad_arguments_are_refused(astronaut):
    landmarks = _similar_landmarks(100, 0.0, (250, 250))
    with pytest.raises(InputError, match="5 x 2"):
        align_face(astronaut, landmarks[:4])
    with pytest.raises(InputError, match="finite"):
        align_face(astronaut, np.full((5, 2), np.nan))
    with pytest.raises(InputError, match="RGB"):
        align_face(astronaut[:, :, 0], landmarks)
    with pytest.raises(InputError, match="size"):
        align_face(astronaut, landmarks, size=1)
    with pytest.raises(InputError, match="padding"):
        align_face(astronaut, landmarks, padding=-0.1)
