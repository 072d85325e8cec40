"""Metrics against hand-computed cases and brute-force references."""

import itertools
import math
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tripletface import metrics
from tripletface.errors import InputError
from tripletface.metrics import (
    accuracy,
    best_threshold,
    eer,
    fold_ids,
    one_shot_identification,
    open_set_rejection,
    roc_auc,
    roc_curve,
    val_at_far,
    verification_accuracy_kfold,
)

# Small integer distances make ties frequent; both classes are always present.
pair_sets = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 8), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda s: 0 < sum(s) < len(s)),
    )
)


def brute_auc(d, s):
    """P(D_same < D_diff) + P(D_same = D_diff) / 2 over all same x different combinations."""
    wins = [1.0 if a < b else 0.5 if a == b else 0.0 for a, b in itertools.product(d[s], d[~s])]
    return float(np.mean(wins))


def brute_best_accuracy(d, s):
    """Best accuracy over every threshold that changes the accept set."""
    return max(accuracy(d, s, t) for t in [-1.0, *d])


def test_perfect_separator():
    d = np.array([0.1, 0.3, 0.2, 1.2, 1.5, 0.9])
    s = np.array([True, True, True, False, False, False])
    assert roc_auc(d, s) == 1
    assert eer(d, s) == 0
    assert val_at_far(d, s, far=0) == (1.0, 0.3)
    assert best_threshold(d, s) == pytest.approx(0.6)
    mean, std, thresholds = verification_accuracy_kfold(d, s, folds=3, seed=0)
    assert (mean, std) == (1.0, 0.0)
    assert np.all((thresholds > 0.3) & (thresholds < 0.9))


def test_inverted_separator_has_auc_zero_and_eer_one():
    d = np.array([2.0, 3.0, 0.0, 1.0])
    s = np.array([True, True, False, False])
    assert roc_auc(d, s) == 0
    assert eer(d, s) == 1


def test_known_small_roc():
    # Sorted: 1 same, 2 diff, 3 same, 4 diff.
    d = np.array([3.0, 2.0, 1.0, 4.0])
    s = np.array([True, False, True, False])
    far, tar, thresholds = roc_curve(d, s)
    np.testing.assert_allclose(far, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tar, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thresholds[1:], [1, 2, 3, 4])
    assert thresholds[0] < 1
    assert roc_auc(d, s) == 0.75
    assert eer(d, s) == 0.5
    assert val_at_far(d, s, far=0) == (0.5, 1.0)
    assert val_at_far(d, s, far=0.5) == (1.0, 3.0)
    # Accepting {1} and accepting {1, 2, 3} both reach 3/4; the smaller threshold wins.
    assert best_threshold(d, s) == 1.5


def test_ties_move_the_roc_diagonally_and_count_half():
    d = np.array([1.0, 2.0, 2.0, 3.0])
    s = np.array([True, True, False, False])
    far, tar, _ = roc_curve(d, s)
    np.testing.assert_allclose(far, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tar, [0, 0.5, 1, 1])
    assert roc_auc(d, s) == 0.875
    # All distances tied: the ROC is the diagonal.
    assert roc_auc(np.zeros(6), np.arange(6) % 2 == 0) == 0.5
    assert eer(np.zeros(6), np.arange(6) % 2 == 0) == 0.5


def test_eer_interpolates_between_roc_points():
    # Sorted 1s 2s 3d 4s 5d: ROC (0,0) (0,1/3) (0,2/3) (1/2,2/3) (1/2,1) (1,1); FAR = 1 - TAR
    # on the horizontal segment at TAR = 2/3, two thirds of the way to FAR = 1/2.
    d = np.array([1.0, 2.0, 4.0, 3.0, 5.0])
    s = np.array([True, True, True, False, False])
    assert eer(d, s) == pytest.approx(1 / 3)


@given(pair_sets)
def test_auc_matches_pairwise_count(case):
    d, s = np.array(case[0], dtype=float), np.array(case[1])
    assert roc_auc(d, s) == pytest.approx(brute_auc(d, s))


@given(pair_sets)
def test_roc_and_eer_are_consistent(case):
    d, s = np.array(case[0], dtype=float), np.array(case[1])
    far, tar, thresholds = roc_curve(d, s)
    assert (far[0], tar[0], far[-1], tar[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    assert np.all(np.diff(thresholds) > 0)
    for f, t, threshold in zip(far, tar, thresholds, strict=True):
        assert f == np.mean(d[~s] <= threshold) and t == np.mean(d[s] <= threshold)
    # The EER lies on the segment where FAR - (1 - TAR) changes sign, between its FAR and FRR.
    rate = eer(d, s)
    i = int(np.argmax(far + tar - 1 >= 0))
    assert far[i - 1] - 1e-12 <= rate <= far[i] + 1e-12
    assert 1 - tar[i] - 1e-12 <= rate <= 1 - tar[i - 1] + 1e-12


@given(pair_sets, st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]))
def test_val_at_far_is_the_best_val_within_the_far(case, target):
    d, s = np.array(case[0], dtype=float), np.array(case[1])
    val, threshold = val_at_far(d, s, far=target)
    assert np.mean(d[~s] <= threshold) <= target
    admissible = [t for t in [-1.0, *d] if np.mean(d[~s] <= t) <= target]
    assert val == max(np.mean(d[s] <= t) for t in admissible)


@given(pair_sets)
def test_best_threshold_maximises_accuracy(case):
    d, s = np.array(case[0], dtype=float), np.array(case[1])
    assert accuracy(d, s, best_threshold(d, s)) == pytest.approx(brute_best_accuracy(d, s))


@given(pair_sets.filter(lambda c: len(c[0]) >= 6), st.integers(2, 5), st.sampled_from([None, 0, 7]))
def test_kfold_tests_each_fold_at_the_best_threshold_of_the_others(case, folds, seed):
    d, s = np.array(case[0], dtype=float), np.array(case[1])
    mean, std, thresholds = verification_accuracy_kfold(d, s, folds=folds, seed=seed)
    ids = fold_ids(s, folds, seed)
    per_fold = []
    for k in range(folds):
        train, test = ids != k, ids == k
        assert accuracy(d[train], s[train], thresholds[k]) == pytest.approx(
            brute_best_accuracy(d[train], s[train])
        )
        per_fold.append(accuracy(d[test], s[test], thresholds[k]))
    assert mean == pytest.approx(np.mean(per_fold))
    assert std == pytest.approx(np.std(per_fold))


def test_fold_ids_follow_file_order_without_seed_and_stratify_with_one():
    s = np.array([True] * 10 + [False] * 10)
    np.testing.assert_array_equal(fold_ids(s, 4, None), np.repeat(np.arange(4), 5))
    ids = fold_ids(s, 5, seed=3)
    for k in range(5):
        assert (s[ids == k]).sum() == 2 and (~s[ids == k]).sum() == 2
    np.testing.assert_array_equal(ids, fold_ids(s, 5, seed=3))
    assert not np.array_equal(ids, fold_ids(s, 5, seed=4))


def test_kfold_on_lfw_like_sets_with_an_outlier_fold():
    # Fold 0's same pair sits at 6, above the threshold the other folds choose (5, halfway between
    # 1 and 9), so fold 0 scores 1/2; the others learn 7.5 from a training set holding the 6.
    d = np.array([6.0, 9.0] + [1.0, 9.0] * 3)
    s = np.array([True, False] * 4)
    mean, _, thresholds = verification_accuracy_kfold(d, s, folds=4, seed=None)
    np.testing.assert_array_equal(thresholds, [5.0, 7.5, 7.5, 7.5])
    assert mean == pytest.approx((0.5 + 1 + 1 + 1) / 4)


def test_verification_rejects_one_class_and_bad_shapes():
    with pytest.raises(InputError, match="same-person and one different-person"):
        roc_auc([1.0, 2.0], [True, True])
    with pytest.raises(InputError, match="1-d arrays of one length"):
        eer([1.0, 2.0], [True])
    with pytest.raises(InputError, match="NaN"):
        roc_curve([1.0, float("nan")], [True, False])
    with pytest.raises(InputError, match="folds"):
        verification_accuracy_kfold([1.0, 2.0], [True, False], folds=10)


def test_metrics_accept_tensors():
    d = torch.tensor([0.1, 0.2, 0.9, 1.0])
    s = torch.tensor([True, True, False, False])
    assert roc_auc(d, s) == 1


def brute_rank_k(gallery, gallery_labels, probes, probe_labels, k):
    """Rank-k accuracy by sorting identities by their nearest entry (distinct distances only)."""
    hits = []
    for probe, label in zip(probes, probe_labels, strict=True):
        nearest = {}
        for entry, who in zip(gallery, gallery_labels, strict=True):
            nearest[who] = min(nearest.get(who, math.inf), float(((probe - entry) ** 2).sum()))
        ranked = sorted(nearest, key=nearest.get)
        hits.append(label in ranked[:k])
    return float(np.mean(hits))


@given(st.integers(0, 10_000), st.integers(2, 7), st.integers(1, 12), st.sampled_from([2, 1024]))
def test_identification_matches_brute_force(seed, persons, probes, block):
    rng = np.random.default_rng(seed)
    gallery_labels = np.concatenate([rng.permutation(persons), rng.integers(0, persons, 3)])
    gallery = rng.normal(size=(len(gallery_labels), 3))
    probe_labels = rng.integers(0, persons, probes)
    probe = rng.normal(size=(probes, 3))
    with mock.patch.object(metrics, "_PROBE_BLOCK", block):
        result = one_shot_identification(gallery, gallery_labels, probe, probe_labels, ks=(1, 2, 5))
    for k in (1, 2, 5):
        assert result[f"rank{k}"] == pytest.approx(
            brute_rank_k(gallery, gallery_labels, probe, probe_labels, k)
        )


def test_identification_hand_case_and_ties():
    gallery = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = [7, 8, 9]
    probes = np.array([[1.0, 0.0], [9.0, 0.0], [4.0, 0.0]])  # third is closer to 7 than to 8
    result = one_shot_identification(gallery, labels, probes, [7, 8, 8], ks=(1, 2, 5))
    assert result == {"rank1": pytest.approx(2 / 3), "rank2": 1.0, "rank5": 1.0}
    # A constant encoder ties every identity: chance level, not a perfect score.
    zeros = np.zeros((4, 2))
    tied = one_shot_identification(zeros, [0, 1, 2, 3], zeros[:2], [1, 2], ks=(1, 2, 5))
    assert tied == {"rank1": 0.25, "rank2": 0.5, "rank5": 1.0}


def test_identification_rejects_unenrolled_probes_and_empty_galleries():
    with pytest.raises(InputError, match="probe label 5 is not in the gallery"):
        one_shot_identification(np.zeros((2, 2)), [0, 1], np.zeros((1, 2)), [5])
    with pytest.raises(InputError, match="gallery is empty"):
        one_shot_identification(np.zeros((0, 2)), [], np.zeros((1, 2)), [0])
    with pytest.raises(InputError, match="N x D and M x D"):
        one_shot_identification(np.zeros((2, 3)), [0, 1], np.zeros((1, 2)), [0])
    with pytest.raises(InputError, match="one label per embedding"):
        open_set_rejection(np.zeros((2, 3)), [0, 1], np.zeros((2, 3)), [0], threshold=1.0)


def test_open_set_rejection_hand_case():
    gallery = np.array([[0.0, 0.0], [10.0, 0.0]])
    probes = np.array(
        [
            [1.0, 0.0],  # known 0, d=1, accepted and right
            [6.0, 0.0],  # known 0, nearest is 1 at d=16: accepted but wrong
            [0.0, 3.0],  # known 0, d=9: accepted at 20, rejected at 4
            [0.0, 5.0],  # unknown, d=25: rejected
            [11.0, 1.0],  # unknown, d=2: wrongly accepted
        ]
    )
    result = open_set_rejection(gallery, [0, 1], probes, [0, 0, 0, 5, 6], threshold=20.0)
    assert result == {
        "rejection_rate": 0.5,
        "identification_rate": pytest.approx(2 / 3),
        "known": 3,
        "unknown": 2,
    }
    with mock.patch.object(metrics, "_PROBE_BLOCK", 2):
        reversed_gallery = open_set_rejection(
            gallery[::-1], [1, 0], probes, [0, 0, 0, 5, 6], threshold=20.0
        )
    assert reversed_gallery == result
    strict = open_set_rejection(gallery, [0, 1], probes, [0, 0, 0, 5, 6], threshold=4.0)
    assert strict["identification_rate"] == pytest.approx(1 / 3)
    only_known = open_set_rejection(gallery, [0, 1], probes[:1], [0], threshold=4.0)
    assert math.isnan(only_known["rejection_rate"]) and only_known["unknown"] == 0
