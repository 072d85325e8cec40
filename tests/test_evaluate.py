"""The evaluation pipeline with encoders whose answers are known: an oracle and a constant."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tripletface.data.folders import FolderDataset, IndexPair, read_pairs
from tripletface.data.synthetic import SyntheticFaces
from tripletface.errors import InputError
from tripletface.evaluate import (
    balanced_pairs,
    embed_dataset,
    evaluate,
    far_name,
    first_image_split,
    open_set_split,
)
from tripletface.models.base import Encoder

REQUIRED = {
    "verification_accuracy",
    "val_at_far_1e-3",
    "roc_auc",
    "eer",
    "rank1",
    "rank5",
    "threshold",
    "pairs",
    "probes",
}


def write_people(root, persons=6, images=3, seed=0):
    """Person p: LFW-named PNGs of a colour of its own plus slight noise, sizes varying."""
    rng = np.random.default_rng(seed)
    for p in range(persons):
        colour = np.array([(60 * p) % 256, (110 * p + 40) % 256, (30 * p + 200) % 256])
        name = f"Person_{p}"
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(1, images + 1):
            side = int(rng.integers(12, 24))
            noise = rng.integers(-3, 4, size=(side, side + 2, 3))
            pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{k:04d}.png")
    return root


class MeanColour(Encoder):
    """An oracle for write_people's images: the mean colour tells persons apart exactly."""

    embedding_dim = 3
    input_size = (8, 8)
    normalized = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert tuple(images.shape[1:]) == (3, 8, 8)
        return images.float().mean(dim=(2, 3)) / 255


class Constant(MeanColour):
    """An encoder that has learnt nothing: every image maps to one point."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(images), 3)


def test_an_oracle_encoder_scores_perfectly(tmp_path):
    data = FolderDataset(write_people(tmp_path, persons=6, images=3))
    # 1000 pairs asks for more than exist (18 same, 135 different): all 18 same pairs are used,
    # and as many different ones.
    report = evaluate(MeanColour(), data, pairs_count=1000, seed=0, unseen_share=0.34)
    figures = report.to_dict()
    assert figures.keys() >= REQUIRED
    assert (figures["pairs"], figures["same_pairs"], figures["probes"]) == (36, 18, 12)
    assert (figures["persons"], figures["images"], figures["unseen_persons"]) == (6, 18, 2)
    for key in ("verification_accuracy", "val_at_far_1e-3", "roc_auc", "rank1", "rank5"):
        assert figures[key] == 1, key
    assert figures["eer"] == 0
    assert figures["open_set_rejection"] == 1 and figures["open_set_identification"] == 1
    same_max = report.distances[report.same].max()
    assert same_max < report.threshold < report.distances[~report.same].min()
    json.dumps(figures, allow_nan=False)


def test_a_constant_encoder_scores_chance(tmp_path):
    data = FolderDataset(write_people(tmp_path, persons=5, images=2))
    report = evaluate(Constant(), data, pairs_count=40, seed=1, folds=4)
    assert report.roc_auc == 0.5 and report.eer == 0.5
    assert report.rank1 == pytest.approx(1 / 5)
    assert report.rank5 == 1
    assert report.threshold < 0  # all distances tie at 0: rejecting every pair is most accurate


class Pixels(Encoder):
    """Raw pixels as the embedding: the nearest-neighbour baseline."""

    embedding_dim = 3 * 16 * 16
    input_size = (16, 16)
    normalized = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().flatten(1) / 255


def test_synthetic_faces_without_nuisance_are_told_apart_by_their_pixels():
    # Every picture of a person is the same when nuisance is 0; with it, pixels fail.
    still = SyntheticFaces(num_persons=8, images_per_person=3, size=16, nuisance=0)
    report = evaluate(Pixels(), still, pairs_count=200, folds=5)
    assert (report.rank1, report.roc_auc, report.eer, report.verification_accuracy) == (1, 1, 0, 1)
    # 40 persons: with a handful, chance alone lifts rank-1 towards one half.
    varied = SyntheticFaces(num_persons=40, images_per_person=3, size=16)
    assert evaluate(Pixels(), varied, pairs_count=200, folds=5).rank1 < 0.5


def test_pairs_from_an_lfw_file_keep_their_order_and_skip_unreadable_images(tmp_path):
    root = write_people(tmp_path / "lfw", persons=3, images=2)
    (root / "Person_2" / "Person_2_0003.png").write_bytes(b"truncated")
    lines = [
        "2 2",
        "Person_0 1 2",
        "Person_1 1 2",
        "Person_0 1 Person_1 1",
        "Person_1 2 Person_2 1",
    ]
    lines += ["Person_2 1 2", "Person_2 1 3", "Person_0 2 Person_2 2", "Person_1 1 Person_2 1"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    pairs = read_pairs(tmp_path / "pairs.txt", root)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        data = FolderDataset(root)
    with pytest.warns(UserWarning, match="dropped 1 of 8 pairs"):
        report = evaluate(MeanColour(), data, pairs=pairs, folds=2)
    assert (report.pairs, report.same_pairs) == (7, 3)
    assert report.roc_auc == 1 and report.rank1 == 1
    np.testing.assert_array_equal(report.same, [True, True, False, False, True, False, False])


def test_index_pairs_are_used_as_given(tmp_path):
    data = FolderDataset(write_people(tmp_path, persons=2, images=2))
    pairs = [IndexPair(0, 1, True), IndexPair(2, 3, True), IndexPair(0, 2, False)] * 2
    report = evaluate(MeanColour(), data, pairs=pairs, folds=2)
    assert report.pairs == 6 and report.roc_auc == 1
    plain = evaluate(MeanColour(), data, pairs=[tuple(p) for p in pairs], folds=2)
    np.testing.assert_array_equal(plain.distances, report.distances)


def test_the_transform_hook_sees_every_image_before_resizing(tmp_path):
    data = FolderDataset(write_people(tmp_path, persons=3, images=2))
    seen = []

    def blank(image):
        seen.append(tuple(image.shape))
        return torch.zeros(3, 5, 5, dtype=torch.uint8)

    embeddings = embed_dataset(MeanColour(), data, transform=blank, batch_size=4)
    assert len(seen) == 6 and all(shape[0] == 3 for shape in seen)
    assert embeddings.shape == (6, 3) and embeddings.abs().sum() == 0
    report = evaluate(MeanColour(), data, transform=blank, pairs_count=30, folds=3)
    assert report.roc_auc == 0.5


class Blacked:
    """A data set's items, index for index, with every image black: a camera that sees nothing."""

    def __init__(self, dataset):
        self.dataset, self.labels = dataset, dataset.labels

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        return torch.zeros_like(image), label


def test_probes_seen_another_way_are_matched_against_the_gallery_of_the_data_set(tmp_path):
    data = FolderDataset(write_people(tmp_path, persons=5, images=3))
    plain = evaluate(MeanColour(), data, pairs_count=60, folds=3)
    same_view = evaluate(MeanColour(), data, pairs_count=60, folds=3, probes=data)
    assert same_view.to_dict() == plain.to_dict()
    np.testing.assert_array_equal(same_view.distances, plain.distances)

    blind = evaluate(MeanColour(), data, pairs_count=60, folds=3, probes=Blacked(data))
    # Each pair's second image is black (embedding 0): its distance is the first image's squared
    # norm, and every probe goes to the one enrolled person nearest the origin.
    firsts = embed_dataset(MeanColour(), data)[[p.first for p in balanced_pairs(data, 60, 0)]]
    np.testing.assert_allclose(blind.distances, (firsts.double() ** 2).sum(1).numpy(), rtol=1e-6)
    assert blind.rank1 == pytest.approx(1 / 5) and blind.probes == 10
    fewer = FolderDataset(write_people(tmp_path / "fewer", persons=4, images=3))
    with pytest.raises(InputError, match="probes hold 12 items and the data set 15"):
        evaluate(MeanColour(), data, pairs_count=60, folds=3, probes=fewer)
    shuffled = Blacked(data)
    shuffled.labels = data.labels[3:] + data.labels[:3]
    with pytest.raises(InputError, match="probe item 0 has label 1 and the data set's 0"):
        evaluate(MeanColour(), data, pairs_count=60, folds=3, probes=shuffled)


def test_a_pair_of_an_image_with_itself_is_dropped_with_a_warning(tmp_path):
    data = FolderDataset(write_people(tmp_path, persons=2, images=2))
    pairs = [IndexPair(0, 1, True), IndexPair(2, 3, True), IndexPair(0, 2, False)] * 2
    itself = [IndexPair(1, 1, True), IndexPair(3, 3, True)]
    with pytest.warns(UserWarning, match="dropped 2 of 8 pairs of an image with itself"):
        report = evaluate(MeanColour(), data, pairs=pairs + itself, folds=2, probes=Blacked(data))
    assert report.pairs == 6


def test_too_few_pairs_and_bad_shares_are_refused(tmp_path):
    data = FolderDataset(write_people(tmp_path, persons=2, images=2))
    with pytest.raises(InputError, match="fewer than the 10 folds"):
        evaluate(MeanColour(), data, pairs_count=4)
    with pytest.raises(InputError, match="unseen share"):
        evaluate(MeanColour(), data, pairs_count=6, folds=2, unseen_share=1.0)


def test_no_unseen_persons_reports_no_rejection_rate(tmp_path):
    data = FolderDataset(write_people(tmp_path, persons=3, images=2))
    figures = evaluate(MeanColour(), data, pairs_count=15, folds=3, unseen_share=0).to_dict()
    assert figures["open_set_rejection"] is None and figures["unseen_persons"] == 0
    assert figures["open_set_identification"] == 1


def test_sampled_pairs_are_balanced_when_one_kind_runs_out():
    data = SimpleNamespace(labels=[0, 0, 1, 1, 2, 2, 3])  # 3 same pairs exist, 18 different
    pairs = balanced_pairs(data, 100, seed=0)
    assert [p.same for p in pairs] == [True] * 3 + [False] * 3
    assert len(balanced_pairs(data, 4, seed=0)) == 4


def test_first_image_split_enrolls_each_persons_first_item():
    gallery, probes = first_image_split([2, 0, 2, 1, 0, 2])
    assert gallery.tolist() == [0, 1, 3] and probes.tolist() == [2, 4, 5]


def test_open_set_split_is_seeded_and_leaves_someone_on_each_side():
    labels = np.repeat(np.arange(10), 3)
    gallery, probes = open_set_split(labels, 0.3, seed=4)
    again = open_set_split(labels, 0.3, seed=4)
    np.testing.assert_array_equal(gallery, again[0])
    np.testing.assert_array_equal(probes, again[1])
    assert not np.array_equal(gallery, open_set_split(labels, 0.3, seed=5)[0])
    assert len(gallery) == 7 and len(probes) == 30 - 7
    assert np.intersect1d(gallery, probes).size == 0
    assert all(labels[g] != labels[g - 1] or g == 0 for g in gallery)  # first images only
    assert len(open_set_split(labels, 0.01, seed=0)[0]) == 9
    assert len(open_set_split(np.array([0, 0, 1]), 0.9, seed=0)[0]) == 1


def test_far_name_matches_facenets_figure():
    assert (far_name(1e-3), far_name(2.5e-4), far_name(0.1)) == ("1e-3", "2.5e-4", "1e-1")


class FirstsBlacked(Blacked):
    """Blacked, but only each person's first image: the gallery's camera sees nothing."""

    def __getitem__(self, index):
        image, label = self.dataset[index]
        first = index == self.labels.index(label)
        return (torch.zeros_like(image) if first else image), label


def test_the_gallery_comes_from_the_data_set_and_every_probe_from_probes(tmp_path):
    from tripletface import metrics
    from tripletface.evaluate import open_set_split

    data = FolderDataset(write_people(tmp_path, persons=5, images=3))
    plain = evaluate(MeanColour(), data, pairs_count=60, folds=3)
    dark_gallery = evaluate(MeanColour(), data, pairs_count=60, folds=3, probes=FirstsBlacked(data))
    assert dark_gallery.rank1 == plain.rank1 == 1.0
    assert dark_gallery.open_set_identification == plain.open_set_identification
    blind = evaluate(MeanColour(), data, pairs_count=60, folds=3, probes=Blacked(data))
    labels = np.asarray(data.labels)
    gallery, probes = open_set_split(labels, 0.2, 0)
    expected = metrics.open_set_rejection(
        embed_dataset(MeanColour(), data)[gallery],
        labels[gallery],
        torch.zeros(len(probes), 3),
        labels[probes],
        blind.threshold,
    )
    assert blind.open_set_rejection == expected["rejection_rate"]
    assert blind.open_set_identification == expected["identification_rate"]
