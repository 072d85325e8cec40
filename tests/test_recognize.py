"""FaceRecognizer on real photos shipped with scikit-image, and its maths against brute force."""

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from test_gallery import hash_lookups

from tripletface import search
from tripletface.confidence import default_model
from tripletface.errors import GalleryError, InputError, PhotoTakenError
from tripletface.faces.extract import ChipMaker, FaceStream
from tripletface.gallery import Gallery
from tripletface.recognize import (
    DEFAULT_THRESHOLDS,
    FaceRecognizer,
    pair_distances,
    threshold_at_far,
)


@pytest.fixture(scope="module")
def encoder():
    from tripletface import load_encoder

    return load_encoder("dlib-resnet")


def make_photos() -> dict[str, np.ndarray]:
    """One real face, the same face mirrored and smaller, two faces side by side, no face.

    The astronaut photo is cropped above her shoulders: HOG at one upsampling also fires, weakly,
    on the patch on her suit.
    """
    face = skimage.data.astronaut()[:320, 48:368]
    mirrored = np.asarray(Image.fromarray(face[:, ::-1]).resize((280, 280)))
    two = np.zeros((320, 560, 3), np.uint8)
    two[:, :320] = face
    two[60:260, 340:540] = np.asarray(Image.fromarray(face).resize((200, 200)))
    return {"face": face, "mirrored": mirrored, "two": two, "none": skimage.data.coffee()}


@pytest.fixture(scope="module")
def photos():
    return make_photos()


@pytest.fixture
def rec(tmp_path, encoder):
    return FaceRecognizer(tmp_path / "g.db", encoder, detector="hog")


def test_enrolled_face_is_identified_and_verified(rec, photos):
    record = rec.enroll("eileen", photos["face"])
    assert record.added and rec.people() == [("eileen", 1)]
    [match] = rec.identify(photos["mirrored"])
    assert match.name == "eileen"
    assert 0 < match.distance <= rec.threshold
    verdict = rec.verify(photos["mirrored"], "eileen")
    assert verdict.same and verdict.distance == pytest.approx(match.distance, abs=1e-5)


def test_every_face_of_an_image_gets_a_match(rec, photos):
    rec.enroll("eileen", photos["face"])
    matches = rec.identify(photos["two"])
    assert [m.name for m in matches] == ["eileen", "eileen"]
    left_box, right_box = matches[0].box, matches[1].box
    assert left_box[2] <= 320 < right_box[0]  # largest first
    assert rec.identify(photos["none"]) == []


def test_a_face_beyond_the_threshold_is_unknown(tmp_path, encoder, photos):
    FaceRecognizer(tmp_path / "g.db", encoder, detector="hog").enroll("eileen", photos["face"])
    strict = FaceRecognizer(tmp_path / "g.db", encoder, threshold=1e-6, detector="hog")
    [match] = strict.identify(photos["mirrored"])
    assert match.name is None and match.distance > 1e-6
    assert not strict.verify(photos["mirrored"], "eileen").same


def test_paths_pil_images_and_arrays_give_the_same_embedding(rec, photos, tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray(photos["face"]).save(path)
    results = [rec.faces(image) for image in (path, Image.open(path), photos["face"])]
    for boxes, embeddings in results[1:]:
        assert boxes == results[0][0]
        np.testing.assert_allclose(embeddings, results[0][1], atol=1e-6)
    assert np.linalg.norm(results[0][1], axis=1) == pytest.approx(1.0, abs=1e-5)


def test_enrolling_the_same_photo_twice_adds_it_once(rec, photos):
    assert rec.enroll("eileen", photos["face"]).added
    assert not rec.enroll("eileen", photos["face"]).added
    assert rec.people() == [("eileen", 1)]


def test_closing_the_recognizer_closes_its_gallery_and_a_later_use_reopens_it(rec, photos):
    with rec:
        rec.enroll("eileen", photos["face"])
        assert Path(f"{rec.gallery_path}-wal").exists()  # open: SQLite's log beside it
    assert not Path(f"{rec.gallery_path}-wal").exists()
    assert rec.people() == [("eileen", 1)]
    rec.close()
    rec.close()  # closing a closed recognizer is harmless


def test_a_gallery_emptied_after_the_check_is_the_empty_gallery_error(rec, photos, monkeypatch):
    rec.enroll("eileen", photos["face"])
    rec.identify(photos["mirrored"])  # the search index is built
    with FaceRecognizer(rec.gallery_path, rec.encoder, detector="hog") as other:
        other.remove("eileen")  # another process, between match's check and its search
    checks = iter([False])  # match's own check still saw eileen; every later one sees none
    monkeypatch.setattr(rec.gallery, "is_empty", lambda: next(checks, True))
    with pytest.raises(GalleryError, match="is empty: enroll someone first"):
        rec.identify(photos["mirrored"])


def test_a_photo_enrolled_for_one_person_is_refused_for_another(rec, photos, tmp_path):
    path = tmp_path / "eileen.png"
    Image.fromarray(photos["face"]).save(path)
    rec.enroll("eileen", path)
    with pytest.raises(
        GalleryError, match=r"eileen.png: this photo is already enrolled as 'eileen'.*'ada'"
    ):
        rec.enroll("ada", path)
    with pytest.raises(GalleryError, match="already enrolled as 'eileen'"):
        rec.enroll_photos("ada", [str(path)], workers=0)
    assert rec.people() == [("eileen", 1)]


def test_a_folders_photo_enrolled_as_someone_else_is_skipped_and_the_rest_enrolled(
    rec, photos, tmp_path
):
    paths = {}
    for person, photo in (("ada", "face"), ("bob", "face"), ("carl", "mirrored")):
        paths[person] = tmp_path / person / f"{photo}.png"
        paths[person].parent.mkdir()
        Image.fromarray(photos[photo]).save(paths[person])  # bob's has the bytes of ada's
    pairs = [(person, str(path)) for person, path in paths.items()]
    results = dict(rec.enroll_folders(pairs, workers=1))
    assert results[str(paths["ada"])].added and results[str(paths["carl"])].added
    taken = results[str(paths["bob"])]
    assert isinstance(taken, PhotoTakenError)
    assert str(taken).startswith(f"{paths['bob']}: this photo is already enrolled as 'ada'")
    assert rec.people() == [("ada", 1), ("carl", 1)]


def test_enrolling_asks_who_owns_the_photos_once_and_writes_nothing_already_there(
    rec, photos, tmp_path, monkeypatch
):
    paths = []
    for photo in ("face", "mirrored"):
        paths.append(str(tmp_path / f"{photo}.png"))
        Image.fromarray(photos[photo]).save(paths[-1])
    lookups = hash_lookups(rec.gallery, monkeypatch)
    assert all(record.added for record in rec.enroll_photos("eileen", paths, workers=1))
    assert len(lookups) == 1
    generation = rec.gallery.generation
    assert not any(record.added for record in rec.enroll_photos("eileen", paths, workers=1))
    assert len(lookups) == 2 and rec.gallery.generation == generation
    assert rec.people() == [("eileen", 2)]


def test_no_face_or_several_faces_are_refused_and_nothing_is_written(rec, photos):
    with pytest.raises(InputError, match="no face found"):
        rec.enroll("x", photos["none"])
    with pytest.raises(InputError, match=r"2 faces found.*--largest"):
        rec.enroll("x", photos["two"])
    assert rec.people() == []
    record = rec.enroll("x", photos["two"], largest=True)
    assert record.box[2] <= 320  # the large face on the left, not the small one


def test_unknown_name_and_empty_gallery_are_reported(rec, photos):
    with pytest.raises(GalleryError, match="empty"):
        rec.identify(photos["face"])
    with pytest.raises(GalleryError, match="empty"):
        rec.verify(photos["face"], "nobody")
    rec.enroll("eileen", photos["face"])
    with pytest.raises(InputError, match="'nobody' is not enrolled"):
        rec.verify(photos["face"], "nobody")
    with pytest.raises(InputError, match="'nobody' is not enrolled"):
        rec.remove("nobody")
    assert rec.remove("eileen") == 1 and rec.people() == []


def test_a_gallery_of_another_encoder_is_refused(tmp_path, encoder):
    Gallery(tmp_path / "g.db", "compact", "0123456789abcdef", 128).close()
    with pytest.raises(GalleryError, match="encoder compact"):
        FaceRecognizer(tmp_path / "g.db", encoder).people()


def test_threshold_is_given_then_calibrated_then_default(tmp_path, encoder):
    rec = FaceRecognizer(tmp_path / "g.db", encoder)
    assert rec.threshold == DEFAULT_THRESHOLDS["dlib-resnet"]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 128))
    x = np.repeat(centres, 4, axis=0) + rng.normal(scale=0.1, size=(20, 128))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    result = rec.calibrate(x, np.repeat(np.arange(5), 4), far=0.01)
    assert FaceRecognizer(tmp_path / "g.db", encoder).threshold == result.threshold
    assert FaceRecognizer(tmp_path / "g.db", encoder, threshold=0.5).threshold == 0.5


def test_whole_image_mode_gives_one_face_with_the_image_box(tmp_path, encoder, photos):
    rec = FaceRecognizer(tmp_path / "g.db", encoder, detector=None)
    boxes, embeddings = rec.faces(photos["none"])
    height, width = photos["none"].shape[:2]
    assert boxes == [(0, 0, width, height)] and embeddings.shape == (1, 128)


def test_folders_in_parallel_match_one_at_a_time(rec, photos, tmp_path):
    rec.enroll("eileen", photos["face"])
    paths = []
    for name in ("mirrored", "none", "two"):
        paths.append(str(tmp_path / f"{name}.png"))
        Image.fromarray(photos[name]).save(paths[-1])
    (tmp_path / "bad.png").write_text("not an image")
    paths.insert(1, str(tmp_path / "bad.png"))
    parallel = list(rec.identify_files(paths, workers=2))
    serial = list(rec.identify_files(paths, workers=1))
    assert [p for p, _ in parallel] == paths
    assert isinstance(parallel[1][1], InputError) and "bad.png" in str(parallel[1][1])
    for (_, a), (_, b) in zip(parallel[:1] + parallel[2:], serial[:1] + serial[2:], strict=True):
        assert [(m.box, m.name) for m in a] == [(m.box, m.name) for m in b]
        assert [m.distance for m in a] == pytest.approx([m.distance for m in b], abs=1e-5)


def test_a_started_stream_is_used_only_if_it_cuts_this_encoders_chips(rec, photos, tmp_path):
    path = str(tmp_path / "face.png")
    Image.fromarray(photos["face"]).save(path)
    with FaceStream(rec.chips, [path]) as stream:
        [item] = rec.embed_files(stream)
    assert len(item.boxes) == 1 and item.embeddings.shape == (1, 128) and item.chips is None
    other = FaceStream(ChipMaker("hog", 150, 0.4), [path])
    with other, pytest.raises(ValueError, match="this encoder takes"):
        list(rec.embed_files(other))


def test_enrolling_several_photos_is_all_or_none(rec, photos, tmp_path):
    good, empty = tmp_path / "good.png", tmp_path / "empty.png"
    Image.fromarray(photos["face"]).save(good)
    Image.fromarray(photos["none"]).save(empty)
    with pytest.raises(InputError, match=r"empty\.png: no face found"):
        rec.enroll_photos("eileen", [str(good), str(empty)], workers=1)
    assert rec.people() == []


embeddings = arrays(
    np.float64, st.tuples(st.integers(3, 12), st.integers(1, 5)), elements=st.floats(-2, 2)
)


@given(embeddings, st.data())
def test_pair_distances_match_a_double_loop(x, data):
    labels = np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(x), max_size=len(x))))
    distances, same = pair_distances(x, labels)
    expected = [
        (((x[i] - x[j]) ** 2).sum(), labels[i] == labels[j])
        for i in range(len(x))
        for j in range(i + 1, len(x))
    ]
    assert distances == pytest.approx([d for d, _ in expected], abs=1e-9)
    assert same.tolist() == [s for _, s in expected]


@given(embeddings, st.sampled_from([0.05, 0.2, 0.5]))
def test_threshold_at_far_is_the_largest_within_the_rate(x, far):
    labels = np.arange(len(x)) % 2
    distances, same = pair_distances(x, labels)
    result = threshold_at_far(x, labels, far)
    rate = lambda t: np.mean(distances[~same] <= t)  # noqa: E731
    assert rate(result.threshold) <= far and result.far == rate(result.threshold)
    above = distances[distances > result.threshold]
    assert len(above) == 0 or rate(above.min()) > far
    assert result.frr == pytest.approx(np.mean(distances[same] > result.threshold))


def test_confidence_comes_from_the_gallerys_calibration_else_the_default(tmp_path, encoder, photos):
    rec = FaceRecognizer(tmp_path / "g.db", encoder, detector="hog")
    rec.enroll("eileen", photos["face"])
    default = default_model("dlib-resnet")
    [match] = rec.identify(photos["mirrored"])
    verdict = rec.verify(photos["mirrored"], "eileen")
    expected = None if default is None else round(float(default(match.distance)), 4)
    assert match.confidence == expected and verdict.confidence == expected
    rng = np.random.default_rng(0)
    x = np.repeat(rng.normal(size=(6, 128)), 5, axis=0) + rng.normal(scale=0.08, size=(30, 128))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    result = rec.calibrate(x, np.repeat(np.arange(6), 5), far=0.01)
    assert rec.gallery.calibration == result.confidence.to_dict()
    assert "60 same-person and 375 different-person pairs of 30 faces" in result.confidence.source
    again = FaceRecognizer(tmp_path / "g.db", encoder, detector="hog", read_only=True)
    [match] = again.identify(photos["mirrored"])
    assert match.confidence == round(float(result.confidence(match.distance)), 4)
    assert 0 <= match.confidence <= 1


def test_tta_averages_each_face_with_its_mirror(tmp_path, encoder, photos):
    plain = FaceRecognizer(tmp_path / "g.db", encoder, detector="hog")
    tta = FaceRecognizer(tmp_path / "g.db", encoder, detector="hog", tta=True)
    boxes, chips = plain.chips(photos["two"])
    both = plain.embed(np.concatenate([chips, chips[:, :, ::-1]]))
    mean = both[: len(chips)] + both[len(chips) :]
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    tta_boxes, embedded = tta.faces(photos["two"])
    assert tta_boxes == boxes and embedded == pytest.approx(expected, abs=1e-5)
    assert np.linalg.norm(embedded, axis=1) == pytest.approx(np.ones(len(boxes)), abs=1e-5)


def test_embeddings_imported_through_its_gallery_keep_the_saved_index(
    tmp_path, encoder, monkeypatch
):
    monkeypatch.setattr(search, "_DELTA_ROWS", 50)
    monkeypatch.setattr(search, "AUTO_FAISS_ROWS", 100)
    faces = np.random.default_rng(0).standard_normal((300, 128)).astype(np.float32)
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    importer = FaceRecognizer(tmp_path / "g.db", encoder)
    for person in range(30):
        importer.gallery.add_faces(f"p{person}", faces[10 * person : 10 * person + 10])
    importer.gallery.close()

    def no_build(*args, **kwargs):
        raise AssertionError("the importer saved the index: a reader opens it, never builds it")

    monkeypatch.setattr(search.FaissIndex, "__init__", no_build)
    reader = FaceRecognizer(tmp_path / "g.db", encoder, read_only=True)
    _, found = reader.index.search(faces[::10], 1)
    assert [reader.index.names[i] for i in found[:, 0]] == [f"p{p}" for p in range(30)]
    assert reader.index.index.mapped
