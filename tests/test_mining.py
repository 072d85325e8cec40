"""Triplet selection against brute-force loops over every triple of a batch."""

import itertools
from collections import Counter

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tripletface.errors import InputError
from tripletface.mining import STRATEGIES, label_groups, mine_triplets


@st.composite
def batches(draw):
    """Small batches of integer embeddings: exact distances, so duplicates and ties are real."""
    n, d = draw(st.integers(1, 9)), draw(st.integers(1, 3))
    values = draw(st.lists(st.integers(-2, 2), min_size=n * d, max_size=n * d))
    labels = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    return torch.tensor(values, dtype=torch.float64).view(n, d), torch.tensor(labels)


def squared(x, i, j):
    return float(((x[i] - x[j]) ** 2).sum())


def pairs_with_negatives(x, labels):
    """Every (a, p) with a != p of one label, with the anchor's negatives."""
    n = len(labels)
    for a, p in itertools.permutations(range(n), 2):
        negatives = [j for j in range(n) if labels[j] != labels[a]]
        if labels[a] == labels[p] and negatives:
            yield a, p, negatives


def as_rows(triplets):
    return sorted(zip(*(t.tolist() for t in triplets), strict=True))


@given(batch=batches())
def test_all_is_every_valid_triplet(batch):
    x, labels = batch
    expected = sorted((a, p, n) for a, p, negs in pairs_with_negatives(x, labels) for n in negs)
    assert as_rows(mine_triplets(x, labels, "all")) == expected


@given(batch=batches())
def test_semihard_is_closest_farther_negative_else_farthest(batch):
    x, labels = batch
    expected = []
    for a, p, negs in pairs_with_negatives(x, labels):
        d_ap = squared(x, a, p)
        farther = [squared(x, a, n) for n in negs if squared(x, a, n) > d_ap]
        expected.append((a, p, min(farther) if farther else max(squared(x, a, n) for n in negs)))
    a, p, n = mine_triplets(x, labels, "semihard")
    found = [
        (i, j, squared(x, i, k)) for i, j, k in zip(a.tolist(), p.tolist(), n.tolist(), strict=True)
    ]
    assert sorted(found) == sorted(expected)
    assert all(labels[i] != labels[k] for i, k in zip(a.tolist(), n.tolist(), strict=True))


@given(batch=batches())
def test_hard_is_farthest_positive_and_closest_negative(batch):
    x, labels = batch
    expected = {}
    for a, p, negs in pairs_with_negatives(x, labels):
        far = max(squared(x, a, p), expected.get(a, (-1.0, 0.0))[0])
        expected[a] = (far, min(squared(x, a, n) for n in negs))
    a, p, n = mine_triplets(x, labels, "hard")
    assert len(set(a.tolist())) == len(a)
    found = {
        i: (squared(x, i, j), squared(x, i, k))
        for i, j, k in zip(*(t.tolist() for t in (a, p, n)), strict=True)
    }
    assert found == expected
    assert all(
        labels[i] == labels[j] and i != j for i, j in zip(a.tolist(), p.tolist(), strict=True)
    )
    assert all(labels[i] != labels[k] for i, k in zip(a.tolist(), n.tolist(), strict=True))


@given(batch=batches(), seed=st.integers(0, 2**31))
def test_random_keeps_every_pair_with_a_valid_negative(batch, seed):
    x, labels = batch
    triplets = mine_triplets(x, labels, "random", generator=torch.Generator().manual_seed(seed))
    rows = as_rows(triplets)
    assert [(a, p) for a, p, _ in rows] == sorted(
        (a, p) for a, p, _ in pairs_with_negatives(x, labels)
    )
    assert all(labels[a] != labels[n] for a, _, n in rows)
    again = mine_triplets(x, labels, "random", generator=torch.Generator().manual_seed(seed))
    assert as_rows(again) == rows


def test_random_negatives_are_uniform():
    labels = torch.tensor([0, 0, 1, 2, 3, 4])
    x = torch.randn(6, 2)
    generator = torch.Generator().manual_seed(0)
    counts = Counter()
    for _ in range(400):
        _, _, n = mine_triplets(x, labels, "random", generator=generator)
        counts.update(n.tolist())
    # 800 draws over 4 negatives: each expected 200, sd about 12.
    assert set(counts) == {2, 3, 4, 5}
    assert all(140 < c < 260 for c in counts.values())


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("labels", [[0, 0, 0], [0, 1, 2], []])
def test_batches_without_triplets_give_empty_indices(strategy, labels):
    a, p, n = mine_triplets(
        torch.randn(len(labels), 4), torch.tensor(labels, dtype=torch.long), strategy
    )
    assert len(a) == len(p) == len(n) == 0


def test_bad_input_is_an_input_error():
    x = torch.randn(4, 3)
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(InputError, match="strategy 'easy'"):
        mine_triplets(x, labels, "easy")
    with pytest.raises(InputError, match="4 integers"):
        mine_triplets(x, labels[:3], "all")
    with pytest.raises(InputError, match="NaN"):
        mine_triplets(x.index_fill(0, torch.tensor([2]), float("nan")), labels, "hard")
    with pytest.raises(InputError, match="N x D"):
        mine_triplets(x[0], labels, "hard")


@given(labels=st.lists(st.integers(0, 5), min_size=0, max_size=30))
def test_label_groups_list_each_rows_same_label_rows(labels):
    labels = torch.tensor(labels)
    columns, others = label_groups(labels)
    for row, label in enumerate(labels.tolist()):
        assert all(labels[c] == label for c in columns[row].tolist())
        expected = {j for j, other in enumerate(labels.tolist()) if other == label and j != row}
        assert set(columns[row][others[row]].tolist()) == expected
        assert int(others[row].sum()) == len(expected)
