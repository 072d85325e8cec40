"""P x K batches: their shape, an epoch's coverage, the set-aside persons, distributed shares."""

import warnings
from collections import Counter

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from tripletface.errors import InputError
from tripletface.sampling import PKSampler


def labels_from_counts(counts):
    return [person for person, count in enumerate(counts) for _ in range(count)]


@given(
    counts=st.lists(st.integers(2, 12), min_size=2, max_size=12),
    p=st.integers(2, 5),
    k=st.integers(2, 5),
    seed=st.integers(0, 1000),
)
def test_every_batch_is_p_persons_by_k_and_an_epoch_covers_every_image(counts, p, k, seed):
    p = min(p, len(counts))
    labels = labels_from_counts(counts)
    sampler = PKSampler(labels, p, k, seed=seed)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        per_person = Counter(labels[i] for i in batch)
        assert len(per_person) == p and set(per_person.values()) == {k}
        for person in per_person:
            distinct = {i for i in batch if labels[i] == person}
            # with replacement only when the person has fewer than K images
            assert len(distinct) == min(k, counts[person])
    assert {i for batch in batches for i in batch} == set(range(len(labels)))


def test_epochs_differ_and_are_reproducible():
    labels = labels_from_counts([5, 6, 7, 8])
    sampler = PKSampler(labels, 2, 3, seed=7)
    first, second = list(sampler), list(sampler)
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(PKSampler(labels, 2, 3, seed=7)) == first
    assert list(PKSampler(labels, 2, 3, seed=8)) != first


@pytest.mark.parametrize("replicas", [2, 3])
def test_ranks_share_each_global_batch_without_overlap(replicas):
    labels = labels_from_counts([4, 9, 3, 6, 5, 7, 2, 8, 4, 6, 5, 3])
    whole = list(PKSampler(labels, 6, 2, seed=3))
    ranks = [
        PKSampler(labels, 6, 2, seed=3, num_replicas=replicas, rank=r) for r in range(replicas)
    ]
    assert {len(sampler) for sampler in ranks} == {len(whole)}
    for batch, shares in zip(whole, zip(*ranks, strict=True), strict=True):
        persons = [{labels[i] for i in share} for share in shares]
        assert all(len(s) == 6 // replicas for s in persons)
        assert set.union(*persons) == {labels[i] for i in batch}
        assert sum(map(len, persons)) == 6
        assert [i for share in shares for i in share] == batch


def test_single_image_persons_are_set_aside_with_one_counting_warning():
    labels = labels_from_counts([3, 1, 4, 1, 1, 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = PKSampler(labels, 2, 2)
    assert len(caught) == 1 and "3 of 6 persons have a single image" in str(caught[0].message)
    singles = {labels.index(person) for person in (1, 3, 4)}
    assert not singles & {i for batch in sampler for i in batch}


def test_works_as_a_data_loader_batch_sampler():
    labels = labels_from_counts([4, 4, 4])
    data = TensorDataset(torch.arange(12), torch.tensor(labels))
    loader = DataLoader(data, batch_sampler=PKSampler(labels, 3, 2, seed=1))
    for rows, batch_labels in loader:
        assert rows.shape == (6,) and sorted(Counter(batch_labels.tolist()).values()) == [2, 2, 2]


@pytest.mark.parametrize(
    ("counts", "p", "k", "kw", "message"),
    [
        ([3, 1, 1], 2, 2, {}, "1 persons have two or more images.*at least two"),
        ([1, 1], 2, 2, {}, "0 persons have two or more images"),
        ([3, 3, 3], 4, 2, {}, "p=4 exceeds the 3 persons"),
        ([3, 3], 1, 2, {}, "p >= 2"),
        ([3, 3], 2, 1, {}, "k >= 2"),
        ([3, 3, 3, 3], 3, 2, {"num_replicas": 2}, "multiple of the number of ranks"),
        ([3, 3, 3, 3], 2, 2, {"num_replicas": 2, "rank": 2}, "rank=2"),
    ],
)
def test_unusable_settings_are_input_errors(counts, p, k, kw, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match=message):
            PKSampler(labels_from_counts(counts), p, k, **kw)
