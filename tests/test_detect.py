"""Face detection on real photos: none, one, several, tiny and huge faces, HOG and CNN."""

import numpy as np
import pytest
import skimage.data
from PIL import Image

from tripletface.errors import InputError
from tripletface.faces.detect import Face, FaceDetector

# Where the astronaut's face is (left, top, right, bottom), checked by eye on the photo.
ASTRONAUT_FACE = (176, 76, 268, 172)


def _resized(image: np.ndarray, factor: float) -> np.ndarray:
    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _assert_plausible(face: Face, expected_box: tuple[float, ...]) -> None:
    assert _overlap(face.box, tuple(expected_box)) > 0.6
    assert face.landmarks.shape == (5, 2)
    left, top, right, bottom = face.box
    inside = (face.landmarks[:, 0] > left) & (face.landmarks[:, 0] < right)
    assert inside.all() and ((face.landmarks[:, 1] > top) & (face.landmarks[:, 1] < bottom)).all()
    # dlib's order: eye on the image's right (points 0, 1), on its left (2, 3), nose below them.
    assert face.landmarks[0, 0] > face.landmarks[1, 0] > face.landmarks[3, 0] > face.landmarks[2, 0]
    assert face.landmarks[4, 1] > face.landmarks[:4, 1].max()


def test_one_face_in_a_portrait(astronaut, hog):
    faces = hog.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    _assert_plausible(face, ASTRONAUT_FACE)
    assert face.detector == "hog" and face.score > 0 and face.scale == 1.0
    assert all(isinstance(v, int) for v in face.box)
    with pytest.raises(ValueError):
        face.landmarks[0, 0] = 0.0


def test_no_face_in_a_gradient_or_a_coffee_cup(hog):
    gradient = np.dstack([*np.meshgrid(np.arange(120), np.arange(100)), np.full((100, 120), 90)])
    # "auto" tries everything it has (HOG, HOG on a doubled image, the CNN) before giving up.
    assert FaceDetector("auto", upsample=0).detect(gradient.astype(np.uint8)) == []
    assert hog.detect(skimage.data.coffee()) == []


def test_several_faces_come_largest_first(astronaut, hog):
    head = astronaut[20:260, 110:340]
    canvas = np.full((300, 560, 3), 128, dtype=np.uint8)
    small = _resized(head, 0.8)
    canvas[30 : 30 + head.shape[0], 10 : 10 + head.shape[1]] = head
    canvas[50 : 50 + small.shape[0], 300 : 300 + small.shape[1]] = small
    faces = hog.detect(canvas)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    _assert_plausible(faces[0], (76, 86, 168, 182))
    _assert_plausible(faces[1], (352.8, 95.6, 426.4, 172.4))


def test_tiny_face_needs_upsampling(astronaut):
    factor = 0.25  # the face becomes about 23 pixels wide
    tiny = _resized(astronaut, factor)
    assert FaceDetector("hog", upsample=0).detect(tiny) == []
    faces = FaceDetector("auto", upsample=1).detect(tiny)
    assert len(faces) == 1
    _assert_plausible(faces[0], np.array(ASTRONAUT_FACE) * factor)
    # "auto" reports the step that found it: HOG at 2x missed, HOG at 4x did.
    assert (faces[0].detector, faces[0].scale) == ("hog", 4.0)


def test_huge_image_is_downscaled_and_boxes_mapped_back(astronaut, hog):
    factor = 6000 / 512
    huge = _resized(astronaut, factor)
    faces = FaceDetector("hog", upsample=0, max_side=1000).detect(huge)
    assert len(faces) == 1 and faces[0].scale == pytest.approx(1000 / huge.shape[0])
    _assert_plausible(faces[0], np.array(ASTRONAUT_FACE) * factor)
    # Landmarks come from the full-resolution pixels and agree with the small image's.
    small = hog.detect(astronaut)[0].landmarks
    assert np.abs(faces[0].landmarks / factor - small).max() < 3


def test_cnn_detector_finds_the_face(astronaut):
    # Small image: the CNN costs about a second per 400 x 400 pixels on one core.
    small = _resized(astronaut, 0.75)
    faces = FaceDetector("cnn", upsample=0).detect(small)
    assert len(faces) == 1
    assert faces[0].detector == "cnn" and faces[0].score > 0
    _assert_plausible(faces[0], np.array(ASTRONAUT_FACE) * 0.75)


def test_face_in_a_given_box(astronaut, hog):
    face = hog.face_in_box(astronaut, ASTRONAUT_FACE, score=0.5)
    assert face.detector == "box" and face.score == 0.5 and face.box == ASTRONAUT_FACE
    detected = hog.detect(astronaut)[0].landmarks
    assert np.abs(face.landmarks - detected).max() < 6
    clipped = hog.face_in_box(astronaut, (-20, -10, 100, 90))
    assert clipped.box == (0, 0, 100, 90)


def test_bad_arguments_are_refused(astronaut, hog):
    with pytest.raises(InputError, match="method"):
        FaceDetector("haar")
    with pytest.raises(InputError, match="upsample"):
        FaceDetector(upsample=-1)
    with pytest.raises(InputError, match="max_side"):
        FaceDetector(max_side=10)
    with pytest.raises(InputError, match="RGB"):
        hog.detect(astronaut[:, :, 0])
    with pytest.raises(InputError, match="empty"):
        hog.face_in_box(astronaut, (10, 10, 10, 40))


def test_the_saved_hog_detector_finds_what_dlibs_own_finds(astronaut, tmp_path, monkeypatch):
    import dlib

    from tripletface.faces.detect import frontal_face_detector

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    built = frontal_face_detector()  # not saved yet: built, then saved
    (saved,) = (tmp_path / "tripletface").glob("dlib-*-frontal-face-detector.svm")
    read = frontal_face_detector()
    reference = dlib.get_frontal_face_detector()
    image = _resized(astronaut, 2.0)
    results = [detector.run(image, 0, -0.5) for detector in (built, read, reference)]
    boxes = [[(r.left(), r.top(), r.right(), r.bottom()) for r in rects] for rects, _, _ in results]
    assert len(boxes[2]) >= 2 and boxes[0] == boxes[1] == boxes[2]
    assert results[0][1] == results[1][1] == results[2][1]  # the same scores
    saved.write_bytes(b"damaged")
    assert frontal_face_detector().run(image, 0, -0.5)[1] == results[2][1]  # rebuilt
    assert saved.read_bytes() != b"damaged"
