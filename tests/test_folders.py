"""Folder data sets, LFW pairs files and seeded pair sampling, on images made in tmp_path."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tripletface.data.folders import (
    FolderDataset,
    IndexPair,
    Pair,
    read_pairs,
    resize,
    sample_pairs,
)
from tripletface.errors import InputError

FORMATS = {".jpg": "JPEG", ".png": "PNG", ".pgm": "PPM", ".gif": "GIF", ".webp": "WEBP"}


def write_image(path, value, size=(20, 16), mode="RGB"):
    """A flat image of one colour (value: 0-255) so decoded pixels are predictable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, size, colour).save(path, FORMATS[path.suffix.lower()])
    return path


def make_people(root, counts, suffix=".png"):
    """A folder per person; person p's images have the grey/colour level 40 * p."""
    for p, count in enumerate(counts):
        for k in range(count):
            write_image(root / f"person{p}" / f"img{k}{suffix}", 40 * p)
    return root


def test_items_labels_classes_and_paths_follow_sorted_folders(tmp_path):
    make_people(tmp_path, [2, 3, 1])
    (tmp_path / "person1" / "notes.txt").write_text("not an image")
    (tmp_path / "person1" / ".hidden.png").write_bytes(b"")
    write_image(tmp_path / "loose.png", 0)  # images outside person folders are not persons
    data = FolderDataset(tmp_path)
    assert data.classes == ["person0", "person1", "person2"]
    assert data.labels == [0, 0, 1, 1, 1, 2]
    assert [p.relative_to(tmp_path).as_posix() for p in data.paths][:3] == [
        "person0/img0.png",
        "person0/img1.png",
        "person1/img0.png",
    ]
    image, label = data[3]
    assert (image.dtype, tuple(image.shape), label) == (torch.uint8, (3, 16, 20), 1)
    assert image[:, 0, 0].tolist() == [40, 215, 20]
    assert data.skipped == []


def test_every_supported_format_loads_and_resizes(tmp_path):
    for k, suffix in enumerate(FORMATS):
        write_image(tmp_path / "a" / f"x{k}{suffix}", 100, mode="L" if suffix == ".pgm" else "RGB")
        write_image(tmp_path / "b" / f"y{k}{suffix.upper()}", 200)
    data = FolderDataset(tmp_path, size=(8, 12))
    assert len(data) == 2 * len(FORMATS)
    assert f"{len(data)} images of 2 persons (resized to 8 x 12)" in data.summary()
    for i in range(len(data)):
        image, _ = data[i]
        assert tuple(image.shape) == (3, 8, 12)
    grey, _ = data[list(FORMATS).index(".pgm")]
    assert grey.unique().tolist() == [100]


def test_unreadable_images_are_named_counted_and_skipped(tmp_path):
    make_people(tmp_path, [3, 2], suffix=".jpg")
    good = (tmp_path / "person0" / "img0.jpg").read_bytes()
    truncated = tmp_path / "person0" / "img1.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "person1" / "img9.png"
    garbage.write_bytes(b"\x89PNG but not really")
    with pytest.warns(UserWarning, match="skipped 2 unreadable") as caught:
        data = FolderDataset(tmp_path)
    message = str(caught[0].message)
    assert str(truncated) in message and str(garbage) in message
    assert [path for path, _ in data.skipped] == [truncated, garbage]
    assert truncated not in data.paths and len(data) == 4
    assert data.summary() == f"{tmp_path}: 4 images of 2 persons (own sizes); 2 unreadable skipped"


def test_strict_makes_an_unreadable_image_fatal(tmp_path):
    make_people(tmp_path, [2, 2])
    bad = tmp_path / "person1" / "img1.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(InputError, match=f"{bad}: unreadable image.*--strict"):
        FolderDataset(tmp_path, strict=True)


def test_empty_and_single_image_data_sets_are_refused(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        FolderDataset(tmp_path / "missing")
    (tmp_path / "empty" / "nobody").mkdir(parents=True)
    with pytest.raises(InputError, match="no readable images in person folders"):
        FolderDataset(tmp_path / "empty")
    make_people(tmp_path / "singles", [1, 1, 1])
    with pytest.raises(InputError, match="no person has 2 or more readable images"):
        FolderDataset(tmp_path / "singles")


def test_resize_keeps_flat_images_flat_and_batches():
    flat = torch.full((3, 10, 14), 77, dtype=torch.uint8)
    out = resize(flat, (5, 7))
    assert (out.dtype, tuple(out.shape)) == (torch.uint8, (3, 5, 7))
    assert out.unique().tolist() == [77]
    assert resize(flat, (10, 14)) is flat
    batch = torch.randint(0, 256, (4, 3, 9, 9), dtype=torch.uint8)
    assert tuple(resize(batch, (4, 6)).shape) == (4, 3, 4, 6)
    np.testing.assert_array_equal(resize(batch, (4, 6))[2], resize(batch[2], (4, 6)))


def lfw_folder(root, people):
    """LFW's naming: ROOT/name/name_0001.jpg for each (name, count)."""
    for name, count in people.items():
        for k in range(1, count + 1):
            write_image(root / name / f"{name}_{k:04d}.jpg", 10 * k)
    return root


def test_read_pairs_in_the_ten_set_format(tmp_path):
    root = lfw_folder(tmp_path / "lfw", {"Ann_A": 2, "Bob_B": 3})
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text(
        "2\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t3\nBob_B\t2\t3\nBob_B\t1\tAnn_A\t2\n"
    )
    pairs = read_pairs(pairs_file, root)
    assert pairs == [
        Pair(root / "Ann_A/Ann_A_0001.jpg", root / "Ann_A/Ann_A_0002.jpg", True),
        Pair(root / "Ann_A/Ann_A_0001.jpg", root / "Bob_B/Bob_B_0003.jpg", False),
        Pair(root / "Bob_B/Bob_B_0002.jpg", root / "Bob_B/Bob_B_0003.jpg", True),
        Pair(root / "Bob_B/Bob_B_0001.jpg", root / "Ann_A/Ann_A_0002.jpg", False),
    ]


def test_read_pairs_in_the_dev_format_with_other_extensions(tmp_path):
    root = tmp_path / "lfw"
    write_image(root / "Ann_A" / "Ann_A_0001.png", 1)
    write_image(root / "Ann_A" / "Ann_A_0002.png", 2)
    write_image(root / "Bob_B" / "Bob_B_0001.png", 3)
    pairs_file = tmp_path / "pairsDevTest.txt"
    pairs_file.write_text("1\nAnn_A 1 2\nAnn_A 2 Bob_B 1\n\n")
    same, diff = read_pairs(pairs_file, root)
    assert same.same and not diff.same
    assert diff.path2 == root / "Bob_B" / "Bob_B_0001.png"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty pairs file"),
        ("ten 300\n", "line 1: expected a header"),
        ("1\nAnn_A 1 2\n", "announces 2 pairs but the file holds 1"),
        ("1\nAnn_A 1 2\nAnn_A 1 Bob_B\n", "line 3: image number 'Bob_B' is not an integer"),
        ("1\nAnn_A 1 2\nAnn_A 1 Bob_B 1 x\n", "line 3: expected 'name n1 n2'.*got 5 fields"),
        ("1\nAnn_A 1 two\nAnn_A 1 Bob_B 1\n", "line 2: image number 'two' is not an integer"),
        ("1\nAnn_A 1 3\nAnn_A 1 Bob_B 1\n", "line 2: .*Ann_A_0003.jpg does not exist"),
    ],
)
def test_read_pairs_names_the_bad_line(tmp_path, text, message):
    root = lfw_folder(tmp_path / "lfw", {"Ann_A": 2, "Bob_B": 1})
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text(text)
    with pytest.raises(InputError, match=message):
        read_pairs(pairs_file, root)


def test_read_pairs_of_a_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read the pairs file"):
        read_pairs(tmp_path / "nope.txt", tmp_path)


labels_strategy = st.lists(st.integers(0, 5), min_size=2, max_size=30)


@given(labels_strategy, st.integers(0, 40), st.integers(0, 40), st.integers(0, 3))
def test_sample_pairs_are_distinct_labelled_right_and_seeded(labels, n_same, n_diff, seed):
    data = SimpleNamespace(labels=labels)
    pairs = sample_pairs(data, n_same, n_diff, seed=seed)
    assert pairs == sample_pairs(data, n_same, n_diff, seed=seed)
    sizes = np.bincount(labels)
    possible_same = int((sizes * (sizes - 1) // 2).sum())
    possible_diff = len(labels) * (len(labels) - 1) // 2 - possible_same
    same = [p for p in pairs if p.same]
    diff = [p for p in pairs if not p.same]
    assert pairs == same + diff
    assert len(same) == min(n_same, possible_same) and len(diff) == min(n_diff, possible_diff)
    for p in pairs:
        assert p.first != p.second and (labels[p.first] == labels[p.second]) == p.same
    keys = {frozenset((p.first, p.second)) for p in pairs}
    assert len(keys) == len(pairs)


def test_sample_pairs_depend_on_the_seed_and_cover_all_when_asked_for_more():
    data = SimpleNamespace(labels=[k // 5 for k in range(50)])
    assert sample_pairs(data, 20, 20, seed=0) != sample_pairs(data, 20, 20, seed=1)
    every = sample_pairs(SimpleNamespace(labels=[0, 0, 0, 1]), 10, 10)
    same = {frozenset((p.first, p.second)) for p in every if p.same}
    assert same == {frozenset(c) for c in itertools.combinations(range(3), 2)}
    assert sum(not p.same for p in every) == 3
    assert all(isinstance(p, IndexPair) for p in every)
    with pytest.raises(InputError, match="pair counts"):
        sample_pairs(data, -1, 3)
