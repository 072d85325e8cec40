"""AlignedFaces: chips of real photos (scikit-image's astronaut), skipped photos, the chip cache.

The "persons" here are crops, flips and colour shifts of one photo: fine for checking what the
data set holds and when its cache is reused, not as identities.
"""

import os
import shutil

import numpy as np
import pytest
import skimage.data
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tripletface.data.chips import (
    AlignedFaces,
    CameraDraws,
    ChipSet,
    in_condition,
    photo_dataset,
)
from tripletface.data.conditions import on_chips
from tripletface.data.images import load_image
from tripletface.errors import InputError
from tripletface.faces.align import face_chips
from tripletface.faces.choice import centre_face, largest_face, similar_faces
from tripletface.faces.detect import FaceDetector

# The astronaut's head with some margin; HOG finds it without upsampling.
HEAD = (slice(0, 300), slice(90, 370))


class CountingDetector(FaceDetector):
    """HOG without upsampling that counts the photos it is asked about."""

    def __init__(self) -> None:
        super().__init__("hog", upsample=0)
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return super().detect(image)


def write_photos(root, persons: int = 2, per_person: int = 3) -> None:
    """root/pN/k.png: the astronaut's head, every other one mirrored, brightness varied."""
    head = skimage.data.astronaut()[HEAD]
    for p in range(persons):
        (root / f"p{p}").mkdir(parents=True)
        for k in range(per_person):
            image = head[:, ::-1] if k % 2 else head
            image = np.clip(image.astype(int) + 12 * k - 25 * p, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / f"p{p}" / f"{k}.png")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of 2 persons x 3 face photos plus a coffee cup in p0 and a truncated PNG in p1."""
    root = tmp_path_factory.mktemp("photos")
    write_photos(root)
    Image.fromarray(skimage.data.coffee()[::2, ::2]).save(root / "p0" / "cup.jpg")
    (root / "p1" / "broken.png").write_bytes((root / "p1" / "0.png").read_bytes()[:200])
    return root


@pytest.fixture
def folder(photos, tmp_path):
    """A private copy of the photos that a test may change."""
    shutil.copytree(photos, tmp_path / "photos")
    return tmp_path / "photos"


def build(root, cache=None, **kwargs):
    detector = CountingDetector()
    with pytest.warns(UserWarning, match="skipped 1 photo"):
        faces = AlignedFaces(root, detector=detector, cache=cache, **kwargs)
    return faces, detector


def test_items_are_aligned_chips_of_the_largest_face(photos):
    faces, detector = build(photos)
    assert len(faces) == 6 and faces.classes == ["p0", "p1"]
    assert faces.labels == [0, 0, 0, 1, 1, 1]
    assert [p.name for p in faces.paths] == ["0.png", "1.png", "2.png"] * 2
    image, label = faces[4]
    assert image.dtype == torch.uint8 and image.shape == (3, 150, 150) and label == 1
    # The same chip as detecting and aligning the photo by hand.
    photo = load_image(faces.paths[4])
    expected = face_chips(photo, detector.detect(photo)[:1])[0]
    assert np.array_equal(image.permute(1, 2, 0).numpy(), expected)
    chips, labels = faces.tensors()
    assert chips.shape == (6, 3, 150, 150) and labels == faces.labels


def test_photos_without_a_face_and_unreadable_files_are_reported_and_skipped(photos):
    with pytest.warns(UserWarning, match=r"1 photo\(s\) without a face and 1 unreadable") as seen:
        faces = AlignedFaces(photos, detector=CountingDetector())
    assert "cup.jpg (no face)" in str(seen[0].message)
    assert "broken.png" in str(seen[0].message)
    assert [p.name for p in faces.no_face] == ["cup.jpg"]
    assert [p.name for p, _ in faces.skipped] == ["broken.png"]
    assert all(p.name not in ("cup.jpg", "broken.png") for p in faces.paths)
    assert "1 photos without a face and 1 unreadable" in faces.summary()


def test_chip_size_and_padding_are_the_callers(photos):
    faces, _ = build(photos, size=64, padding=0.4)
    assert faces.chips.shape == (6, 3, 64, 64)
    wider, _ = build(photos, size=64, padding=0.1)
    # More padding shows more around the face: the chips differ.
    assert not torch.equal(faces.chips, wider.chips)


@pytest.mark.slow  # detects 16 photos: several seconds on a loaded machine
def test_the_cache_is_reused_and_only_changed_photos_are_detected_again(folder):
    cache = folder.parent / "run" / "faces.npz"
    first, detector = build(folder, cache=cache)
    assert detector.calls == 7 and first.examined == 8 and cache.is_file()
    assert not [p for p in cache.parent.iterdir() if p.name != "faces.npz"]  # no temporary file

    again, detector = build(folder, cache=cache)
    assert detector.calls == 0 and again.reused == 8
    assert torch.equal(again.chips, first.chips) and again.labels == first.labels

    # Rewrite one photo with other pixels: only it is detected, and its chip follows the file.
    path = folder / "p1" / "2.png"
    mirrored = load_image(path)[:, ::-1]
    Image.fromarray(np.ascontiguousarray(mirrored)).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed, detector = build(folder, cache=cache)
    assert detector.calls == 1 and changed.reused == 7
    assert torch.equal(changed.chips[:5], first.chips[:5])
    assert not torch.equal(changed.chips[5], first.chips[5])

    # A new photo is detected, a removed one leaves the set; then the cache is stable again.
    shutil.copy(folder / "p0" / "0.png", folder / "p1" / "9.png")
    (folder / "p0" / "1.png").unlink()
    moved, detector = build(folder, cache=cache)
    assert detector.calls == 1 and len(moved) == 6 and moved.labels == [0, 0, 1, 1, 1, 1]
    assert build(folder, cache=cache)[1].calls == 0


def test_other_chip_settings_do_not_use_the_cache(folder):
    cache = folder / "faces.npz"
    build(folder, cache=cache)
    other, detector = build(folder, cache=cache, padding=0.3)
    assert detector.calls == 7 and other.reused == 0


@pytest.fixture(scope="module")
def cached(photos, tmp_path_factory):
    """The chips of the photos and the bytes of the cache file they were written to."""
    cache = tmp_path_factory.mktemp("cache") / "faces.npz"
    faces, _ = build(photos, cache=cache)
    return faces, cache.read_bytes()


@pytest.mark.parametrize(
    "damage",
    [
        lambda cache: b"not an npz file",
        lambda cache: b"PK\x03\x04garbage",  # a zip's signature, then nothing of a zip
        lambda cache: cache[: len(cache) // 2],
    ],
    ids=["garbage", "zip-signature", "truncated"],
)
def test_a_damaged_cache_is_rebuilt_with_a_warning(folder, cached, damage):
    reference, cache_bytes = cached
    cache = folder / "faces.npz"
    cache.write_bytes(damage(cache_bytes))
    with pytest.warns(UserWarning, match="cache .* is unreadable"):
        faces, detector = build(folder, cache=cache)
    assert detector.calls == 7 and faces.reused == 0
    assert torch.equal(faces.chips, reference.chips) and faces.labels == reference.labels
    assert build(folder, cache=cache)[1].calls == 0


def test_a_folder_without_any_face_is_refused(tmp_path):
    (tmp_path / "cups").mkdir()
    Image.fromarray(skimage.data.coffee()[::2, ::2]).save(tmp_path / "cups" / "a.png")
    with pytest.warns(UserWarning), pytest.raises(InputError, match="no face found in any photo"):
        AlignedFaces(tmp_path, detector=CountingDetector())


def test_persons_subset_renumbers_labels():
    chips = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 2, 2).clone()
    chip_set = ChipSet(chips, [0, 1, 1, 2, 0], ["a", "b", "c"], [f"{i}.png" for i in range(5)])
    subset = chip_set.persons(["c", "a"])
    assert subset.classes == ["c", "a"] and subset.labels == [1, 0, 1]
    assert [int(image[0, 0, 0]) for image, _ in subset] == [0, 3, 4]
    assert [p.name for p in subset.paths] == ["0.png", "3.png", "4.png"]
    with pytest.raises(InputError, match="not in this set"):
        chip_set.persons(["z"])
    with pytest.raises(InputError, match="differ in count"):
        ChipSet(chips, [0, 1], ["a", "b"], ["x", "y"])


def test_photo_dataset_gives_chips_only_to_encoders_that_take_them(tmp_path):
    from tripletface.data.folders import FolderDataset

    write_photos(tmp_path, persons=2, per_person=2)
    whole = photo_dataset(tmp_path, (20, 30), None)
    assert isinstance(whole, FolderDataset) and whole[0][0].shape == (3, 20, 30)
    chips = photo_dataset(tmp_path, (40, 40), 0.25)
    assert isinstance(chips, AlignedFaces) and chips.chips.shape == (4, 3, 40, 40)
    with pytest.raises(InputError, match="square"):
        photo_dataset(tmp_path, (40, 30), 0.25)


def test_strict_makes_an_unreadable_photo_fatal_but_not_a_photo_without_a_face(folder):
    cache = folder / "faces.npz"
    bad = folder / "p1" / "broken.png"
    with pytest.raises(InputError, match="unreadable image") as refused:
        AlignedFaces(folder, detector=CountingDetector(), cache=cache, strict=True)
    message = str(refused.value)
    assert message.startswith(f"{bad}: unreadable image (") and "\n" not in message
    assert message.endswith("remove it or run without --strict") and message.count(str(bad)) == 1
    # The detections were cached before refusing: removing the file is all a rerun costs.
    bad.unlink()
    detector = CountingDetector()
    with pytest.warns(UserWarning, match="1 photo.* without a face and 0 unreadable"):
        faces = AlignedFaces(folder, detector=detector, cache=cache, strict=True)
    assert detector.calls == 0 and len(faces) == 6


def test_photo_dataset_passes_strict_to_aligned_chips(tmp_path):
    write_photos(tmp_path, persons=2, per_person=2)
    bad = tmp_path / "p1" / "broken.png"
    bad.write_bytes((tmp_path / "p1" / "0.png").read_bytes()[:100])
    with pytest.raises(InputError, match=f"{bad}: unreadable image .*without --strict"):
        photo_dataset(tmp_path, (40, 40), 0.25, cache=tmp_path / "c.npz", strict=True)
    with pytest.warns(UserWarning, match="0 photo.* without a face and 1 unreadable"):
        chips = photo_dataset(tmp_path, (40, 40), 0.25, cache=tmp_path / "c.npz")
    assert len(chips) == 4 and chips.reused == 5


@given(
    st.lists(
        st.tuples(
            st.integers(0, 300), st.integers(0, 300), st.integers(1, 100), st.integers(1, 100)
        ),
        min_size=1,
        max_size=6,
    ),
    st.tuples(st.integers(1, 400), st.integers(1, 400)),
)
def test_centre_and_largest_face_against_direct_formulas(rects, shape):
    boxes = np.array([(x, y, x + w, y + h) for x, y, w, h in rects])
    middle = np.array([shape[1] / 2, shape[0] / 2])
    off_centre = [np.sum(((b[:2] + b[2:]) / 2 - middle) ** 2) for b in boxes]
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert off_centre[centre_face(boxes, shape)] == min(off_centre)
    assert largest_face(boxes) == int(np.argmax(areas))


def test_similar_faces_picks_the_face_nearest_the_persons_other_photos():
    rng = np.random.default_rng(0)
    person = [rng.normal(size=8) for _ in range(2)]
    unit = [p / np.linalg.norm(p) for p in person]
    stranger = -unit[0]
    photos = [
        np.stack([stranger, unit[0]]),  # two faces, the second is the person
        unit[0][None],
        unit[0][None] * 0.99 + 0.01 * unit[1][None],
        np.stack([unit[1], stranger]),  # the other person's photo with a stranger
        np.stack([stranger, unit[1]]),  # person 1 has no single-face photo
        np.stack([unit[1], unit[0]]),
        np.stack([unit[0], unit[1]]),  # a third person with one photo: nobody to compare with
    ]
    labels = [0, 0, 0, 1, 1, 1, 2]
    assert similar_faces(photos, labels) == [1, 0, 0, 0, 1, 0, -1]


def test_photos_with_several_faces_are_counted_and_the_rule_chooses(tmp_path):
    face = skimage.data.astronaut()[:320, 48:368]
    small = np.asarray(Image.fromarray(face).resize((200, 200)))
    for person, offset in (("a", 0), ("b", 40)):
        (tmp_path / person).mkdir()
        shifted = np.clip(face.astype(int) - offset, 0, 255).astype(np.uint8)
        Image.fromarray(shifted).save(tmp_path / person / "alone.png")
        two = np.zeros((320, 760, 3), np.uint8)
        two[:, 440:] = face  # the large face off to the right, the small one in the middle
        two[60:260, 280:480] = small
        Image.fromarray(two).save(tmp_path / person / "two.png")
    detector = FaceDetector("hog")  # one doubling finds the small face too
    largest = AlignedFaces(tmp_path, detector=detector, cache=tmp_path / "c.npz", rule="largest")
    centre = AlignedFaces(tmp_path, detector=detector, cache=tmp_path / "c.npz", rule="centre")
    assert largest.examined == 4 and centre.reused == 4  # all faces detected and cached once
    assert [p.name for p in largest.several_faces] == ["two.png", "two.png"]
    assert "2 with several faces (the centre one taken)" in centre.summary()
    assert torch.equal(largest.chips[0], centre.chips[0])  # one face: the same chip
    assert not torch.equal(largest.chips[1], centre.chips[1])
    # Without an encoder "similar" is the largest; with one it is the face like the other photo.
    assert AlignedFaces(tmp_path, detector=detector, cache=tmp_path / "c.npz").rule == "largest"

    def embed(chips):
        return chips.reshape(len(chips), -1).astype(np.float32)[:, ::997] / 255

    similar = AlignedFaces(
        tmp_path, detector=detector, cache=tmp_path / "c.npz", rule="similar", embed=embed
    )
    assert similar.rule == "similar" and len(similar) == 4


@pytest.mark.parametrize("condition", ["low-resolution", "mask"])
def test_chips_in_a_condition_keep_their_items_and_leave_the_originals(condition):
    pixels = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    chips = ChipSet(pixels.clone(), [0, 1, 1], ["a", "b"], ["0.png", "1.png", "2.png"])
    changed = in_condition(chips, condition, seed=5, padding=0.25)
    expected = on_chips(condition, pixels.permute(0, 2, 3, 1).numpy(), 5, 0.25)
    np.testing.assert_array_equal(changed.chips.permute(0, 2, 3, 1).numpy(), expected)
    assert (changed.labels, changed.classes, changed.paths) == (
        chips.labels,
        chips.classes,
        chips.paths,
    )
    assert torch.equal(chips.chips, pixels) and not torch.equal(changed.chips, pixels)


def test_camera_draws_serve_clean_chips_then_the_condition_drawn_anew_each_epoch():
    pixels = torch.randint(0, 256, (4, 3, 60, 60), dtype=torch.uint8)
    chips = ChipSet(pixels.clone(), [0, 0, 1, 1], ["a", "b"], [f"{i}.png" for i in range(4)])
    draws = CameraDraws(chips, "low-resolution", seed=3, padding=0.25)
    assert len(draws) == 8 and draws.labels == [0, 0, 1, 1, 0, 0, 1, 1]
    for index in range(4):
        assert (
            torch.equal(draws[index][0], pixels[index]) and draws[index][1] == chips.labels[index]
        )
    first = [draws[4 + i][0] for i in range(4)]
    assert all(chip.shape == (3, 60, 60) and chip.dtype == torch.uint8 for chip in first)
    assert all(not torch.equal(chip, pixels[i]) for i, chip in enumerate(first))
    assert all(torch.equal(draws[4 + i][0], chip) for i, chip in enumerate(first))  # same epoch
    draws.set_epoch(1)
    second = [draws[4 + i][0] for i in range(4)]
    assert all(not torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.equal(chips.chips, pixels)


def test_camera_draws_of_a_mask_are_the_masked_chips():
    pixels = torch.randint(0, 256, (2, 3, 60, 60), dtype=torch.uint8)
    chips = ChipSet(pixels, [0, 1], ["a", "b"], ["0.png", "1.png"])
    draws = CameraDraws(chips, "mask", seed=0, padding=0.25)
    masked = in_condition(chips, "mask", seed=0, padding=0.25).chips
    assert all(torch.equal(draws[2 + i][0], masked[i]) for i in range(2))
    with pytest.raises(InputError, match="unknown camera condition 'fog'"):
        CameraDraws(chips, "fog", seed=0, padding=0.25)
