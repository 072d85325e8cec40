"""The triplet loss and its fused batch form against hand-worked cases and brute-force loops."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

# The integer batches of the mining tests: exact distances, so duplicates and ties are real.
from test_mining import batches

from tripletface.distances import KINDS, paired_distances
from tripletface.errors import InputError
from tripletface.losses import (
    TripletLoss,
    TripletStats,
    batch_triplet_loss,
    distillation_loss,
    triplet_loss,
)
from tripletface.mining import STRATEGIES, mine_triplets


def points(*squared_norms):
    """Rows at the given squared distances from the origin, each on its own axis."""
    rows = torch.zeros(len(squared_norms), len(squared_norms), dtype=torch.float64)
    rows[range(len(squared_norms)), range(len(squared_norms))] = torch.tensor(
        squared_norms, dtype=torch.float64
    ).sqrt()
    return rows


def test_worked_example_costs_019_then_0():
    anchor = torch.zeros(1, 2, dtype=torch.float64)
    positive, close, far = points(0.5, 0.51)[:1], points(0.5, 0.51)[1:], points(0.5, 0.7)[1:]
    assert triplet_loss(anchor, positive, close, margin=0.2).item() == pytest.approx(0.19)
    # d(a,n) - d(a,p) equals the margin: the hinge is 0 up to the rounding of the square roots.
    assert triplet_loss(anchor, positive, far, margin=0.2).item() == pytest.approx(0, abs=1e-12)


def test_reductions_sum_mean_over_all_and_none():
    anchor = torch.zeros(2, 2, dtype=torch.float64)
    positive = torch.tensor([[0.5**0.5, 0], [0.5**0.5, 0]], dtype=torch.float64)
    negative = torch.tensor([[0, 0.51**0.5], [0, 0.7**0.5]], dtype=torch.float64)
    terms = triplet_loss(anchor, positive, negative, reduction="none")
    torch.testing.assert_close(terms, torch.tensor([0.19, 0.0], dtype=torch.float64))
    assert triplet_loss(anchor, positive, negative).item() == pytest.approx(0.19)
    assert triplet_loss(anchor, positive, negative, reduction="mean").item() == pytest.approx(0.095)


@pytest.mark.parametrize("kind", KINDS)
def test_distance_kinds_and_soft_margin(kind):
    a, p, n = (torch.randn(7, 4, dtype=torch.float64) for _ in range(3))
    d_ap, d_an = paired_distances(a, p, kind), paired_distances(a, n, kind)
    hinge = triplet_loss(a, p, n, 0.3, "none", kind)
    torch.testing.assert_close(hinge, (d_ap - d_an + 0.3).clamp_min(0))
    soft = triplet_loss(a, p, n, 0.0, "none", kind, soft=True)
    torch.testing.assert_close(soft, torch.log1p(torch.exp(d_ap - d_an)))


def test_triplet_loss_refuses_mismatched_shapes_and_unknown_reduction():
    with pytest.raises(InputError, match="one shape"):
        triplet_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(InputError, match="reduction 'max'"):
        triplet_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), reduction="max")


# Four points on a line, labels 0 0 1 1: x = 0, 1, 2, 5. Squared distances:
# d01 = 1, d02 = 4, d03 = 25, d12 = 1, d13 = 16, d23 = 9 (d12 = d01 is a tie).
LINE = torch.tensor([[0.0], [1.0], [2.0], [5.0]], dtype=torch.float64)
LINE_LABELS = torch.tensor([0, 0, 1, 1])
# Hand-counted with margin 0.2 (violations d_ap - d_an + 0.2):
# all: (0,1,2) -2.8 (0,1,3) -23.8 (1,0,2) 0.2 (1,0,3) -14.8 (2,3,0) 5.2 (2,3,1) 8.2
#      (3,2,0) -15.8 (3,2,1) -6.8
# hard: anchors 0..3 take (1,2) -2.8, (0,2) 0.2, (3,1) 8.2, (2,1) -6.8
# semihard: (0,1) -> 2 at 4; (1,0) -> 3 at 16 (2 ties at 1, not farther); (2,3) -> none
#           farther than 9, farthest is 0 at 4; (3,2) -> 1 at 16
HAND = {
    "all": (13.6, TripletStats(8, 3, 3 / 8, 40 / 8, 92 / 8)),
    "hard": (8.4, TripletStats(4, 2, 0.5, 5.0, 22 / 4)),
    "semihard": (5.2, TripletStats(4, 1, 0.25, 5.0, 10.0)),
}


@pytest.mark.parametrize("strategy", sorted(HAND))
def test_loss_and_stats_match_hand_counted_case(strategy):
    total, expected = HAND[strategy]
    loss, stats = batch_triplet_loss(LINE, LINE_LABELS, strategy, reduction="sum")
    assert loss.item() == pytest.approx(total)
    assert stats.considered == expected.considered and stats.active == expected.active
    for name in ("active_fraction", "mean_ap", "mean_an"):
        assert getattr(stats, name) == pytest.approx(getattr(expected, name)), name
    mean, _ = batch_triplet_loss(LINE, LINE_LABELS, strategy)
    assert mean.item() == pytest.approx(total / expected.considered)
    active_mean, _ = batch_triplet_loss(LINE, LINE_LABELS, strategy, active_only=True)
    assert active_mean.item() == pytest.approx(total / expected.active)
    assert stats.as_dict()["considered"] == expected.considered


def brute_force_all(x, labels, margin, soft):
    """Sum of the loss, count, active count over every valid triplet, by a triple loop."""
    rows, labels = x.tolist(), labels.tolist()

    def squared(i, j):
        return sum((u - v) ** 2 for u, v in zip(rows[i], rows[j], strict=True))

    total, count, active = 0.0, 0, 0
    for a, p, n in itertools.permutations(range(len(rows)), 3):
        if labels[a] == labels[p] and labels[a] != labels[n]:
            v = squared(a, p) - squared(a, n) + margin
            total += math.log1p(math.exp(v)) if soft else max(v, 0.0)
            count, active = count + 1, active + (v > 0)
    return total, count, active


@given(batch=batches(), margin=st.sampled_from([0.0, 0.2, 1.0]), soft=st.booleans())
def test_all_equals_brute_force_triple_loop(batch, margin, soft):
    x, labels = batch
    loss, stats = batch_triplet_loss(x, labels, "all", margin, "sum", soft=soft)
    total, count, active = brute_force_all(x, labels, margin, soft)
    assert loss.item() == pytest.approx(total, rel=1e-9, abs=1e-9)
    assert (stats.considered, stats.active) == (count, active)


@pytest.mark.parametrize("strategy", ["random", "semihard", "hard"])
@given(batch=batches(), soft=st.booleans())
def test_fused_mined_strategies_equal_loss_of_mined_triplets(strategy, batch, soft):
    x, labels = batch
    a, p, n = mine_triplets(x, labels, strategy, generator=torch.Generator().manual_seed(3))
    expected = triplet_loss(x[a], x[p], x[n], reduction="sum", soft=soft)
    generator = torch.Generator().manual_seed(3)
    loss, stats = batch_triplet_loss(
        x, labels, strategy, reduction="sum", soft=soft, generator=generator
    )
    assert loss.item() == pytest.approx(expected.item(), abs=1e-9)
    assert stats.considered == len(a)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("soft", [False, True])
def test_gradients_match_finite_differences(strategy, soft):
    # Gaussian inputs: no distance ties, so the mining is locally constant.
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])

    def loss(e):
        generator = torch.Generator().manual_seed(0)
        return batch_triplet_loss(e, labels, strategy, 0.5, soft=soft, generator=generator)[0]

    assert torch.autograd.gradcheck(loss, (x,))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_all_gradients_with_other_distances(distance):
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    assert torch.autograd.gradcheck(
        lambda e: batch_triplet_loss(e, labels, "all", 0.3, distance=distance)[0], (x,)
    )


def test_all_in_float32_stays_close_to_float64_on_a_big_batch():
    x = torch.nn.functional.normalize(torch.randn(400, 16, dtype=torch.float64), dim=1)
    labels = torch.arange(20).repeat_interleave(20)
    exact, _ = batch_triplet_loss(x, labels, "all")
    rounded, _ = batch_triplet_loss(x.float(), labels, "all")
    assert rounded.item() == pytest.approx(exact.item(), rel=1e-5)


def test_all_never_materialises_the_triplets():
    # Two persons of 1000 images: 2e9 triplets, 24 GB as index tensors; O(B^2) is 16 MB.
    x = torch.nn.functional.normalize(torch.randn(2000, 8), dim=1).requires_grad_()
    loss, stats = batch_triplet_loss(x, torch.arange(2000) // 1000, "all")
    loss.backward()
    assert stats.considered == 2 * 1000 * 999 * 1000
    assert 0 < stats.active < stats.considered and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3], []])
def test_batch_without_triplets_is_a_zero_loss_with_zero_gradient(strategy, labels):
    x = torch.randn(len(labels), 3, requires_grad=True)
    loss, stats = batch_triplet_loss(x, torch.tensor(labels, dtype=torch.long), strategy)
    loss.backward()
    assert loss.item() == 0 and (x.grad == 0).all()
    assert stats == TripletStats(0, 0, 0.0, 0.0, 0.0)


def test_batch_refuses_bad_input():
    x, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(InputError, match="NaN or inf"):
        batch_triplet_loss(x.index_fill(0, torch.tensor([1]), float("inf")), labels)
    with pytest.raises(InputError, match="4 integers"):
        batch_triplet_loss(x, torch.tensor([0, 1]))
    with pytest.raises(InputError, match="reduction 'none'"):
        batch_triplet_loss(x, labels, reduction="none")
    with pytest.raises(InputError, match="soft=False"):
        batch_triplet_loss(x, labels, soft=True, active_only=True)
    with pytest.raises(InputError, match="distance 'l1'"):
        batch_triplet_loss(x, labels, distance="l1")


def test_module_is_the_function_with_its_stats_kept():
    x, labels = torch.randn(12, 5), torch.arange(4).repeat_interleave(3)
    module = TripletLoss(margin=0.3, strategy="all", distance="euclidean")
    expected, stats = batch_triplet_loss(x, labels, "all", 0.3, distance="euclidean")
    assert module(x, labels).item() == pytest.approx(expected.item())
    assert module.last_stats == stats
    with pytest.raises(InputError, match="strategy"):
        TripletLoss(strategy="hardest")


@given(
    rows=st.integers(0, 6),
    dim=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_distillation_is_the_mean_squared_distance_to_the_targets(rows, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    targets = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    terms = [sum((embeddings[i, j] - targets[i, j]) ** 2 for j in range(dim)) for i in range(rows)]
    got = distillation_loss(embeddings, targets, reduction="none")
    assert got.tolist() == pytest.approx([float(t) for t in terms])
    assert float(distillation_loss(embeddings, targets, "sum")) == pytest.approx(float(sum(terms)))
    mean = float(sum(terms)) / rows if rows else 0.0
    assert float(distillation_loss(embeddings, targets)) == pytest.approx(mean)


def test_distillation_moves_the_embeddings_only():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    targets = torch.tensor([[0.0, 0.0], [0.0, 1.0]], requires_grad=True)
    distillation_loss(embeddings, targets).backward()
    # d/dx mean_i |x_i - t_i|^2 = 2 (x_i - t_i) / N
    assert embeddings.grad.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert targets.grad is None
    with pytest.raises(InputError, match="N x D"):
        distillation_loss(embeddings, targets[:1])
    with pytest.raises(InputError, match="reduction"):
        distillation_loss(embeddings, targets, reduction="max")
