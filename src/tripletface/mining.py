"""Online triplet selection within a batch of labelled embeddings (FaceNet, Hermans et al. 2017)."""

import torch
from torch import Tensor

from tripletface.distances import pairwise_distances
from tripletface.errors import InputError

#: "random": one uniform negative per anchor-positive pair; "all": every valid triplet;
#: "semihard": per pair, the closest negative farther than the positive, else the farthest;
#: "hard": per anchor, its farthest positive and its closest negative.
STRATEGIES = ("random", "all", "semihard", "hard")

Triplets = tuple[Tensor, Tensor, Tensor]


def check_batch(embeddings: Tensor, labels: Tensor) -> Tensor:
    """Validate an N x D float batch with N finite rows and N labels; returns labels as a tensor."""
    labels = torch.as_tensor(labels, device=embeddings.device)
    if embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise InputError(
            f"embeddings must be an N x D float tensor, got {embeddings.dtype} "
            f"of shape {tuple(embeddings.shape)}"
        )
    if labels.ndim != 1 or len(labels) != len(embeddings) or labels.is_floating_point():
        raise InputError(
            f"labels must be {len(embeddings)} integers, one per embedding row, "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if not torch.isfinite(embeddings).all():
        raise InputError("embeddings contain NaN or inf: lower the learning rate or check inputs")
    return labels


def check_strategy(strategy: str) -> None:
    """Raise InputError unless `strategy` is one of STRATEGIES."""
    if strategy not in STRATEGIES:
        raise InputError(f"strategy {strategy!r} is unknown: use one of {', '.join(STRATEGIES)}")


def negative_mask(labels: Tensor) -> Tensor:
    """B x B boolean mask, True where the row's and the column's labels differ."""
    return labels[:, None] != labels[None, :]


def sorted_negatives(dist: Tensor, negative: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's distances to its negatives, ascending (others last as +inf), and their order."""
    keyed = dist.masked_fill(~negative, float("inf"))
    values, order = torch.sort(keyed, dim=1, stable=True)
    return values, order


def mine_triplets(
    embeddings: Tensor,
    labels: Tensor,
    strategy: str,
    margin: float = 0.2,
    generator: torch.Generator | None = None,
    distance: str = "squared",
) -> Triplets:
    """Index tensors (a, p, n) of the triplets `strategy` selects in an N x D batch (STRATEGIES).

    `margin` is accepted for a signature shared with `batch_triplet_loss`; none of the four
    strategies depends on it. Anchors without a positive or without a negative give no triplet.
    """
    labels = check_batch(embeddings, labels)
    check_strategy(strategy)
    with torch.no_grad():
        dist = pairwise_distances(embeddings.detach(), kind=distance)
        return select_triplets(dist, labels, strategy, generator)


def select_triplets(
    dist: Tensor,
    labels: Tensor,
    strategy: str,
    generator: torch.Generator | None = None,
    scratch: bool = False,
) -> Triplets:
    """Index tensors (a, p, n) that `strategy` selects from the N x N distances of labelled rows.

    With `scratch`, "hard" may overwrite `dist` instead of copying it (one N x N pass less).
    """
    if len(labels) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dist.device)
        return empty, empty, empty
    if strategy == "hard":
        return _hardest(dist if scratch else dist.clone(), labels)
    columns, valid = label_groups(labels)
    negative = negative_mask(labels)
    if strategy == "semihard":
        return _semihard(dist, columns, valid, negative)
    if strategy == "random":
        return _random(columns, valid, negative, generator)
    anchor = torch.arange(len(labels), device=labels.device)[:, None].expand_as(columns)
    anchor, positive = anchor[valid], columns[valid]
    pair, n = negative[anchor].nonzero(as_tuple=True)
    return anchor[pair], positive[pair], n


def _random(
    columns: Tensor, valid: Tensor, negative: Tensor, generator: torch.Generator | None
) -> Triplets:
    """Per anchor-positive pair (label_groups' columns), one of the anchor's negatives drawn
    uniformly."""
    n_neg = negative.sum(1, keepdim=True)
    valid = valid & (n_neg > 0)
    draw = (torch.rand(columns.shape, generator=generator) * n_neg).long()
    # The k-th negative of a row (k from 0) is the first column where the running count reaches k+1.
    seen = negative.cumsum(1)
    picked = torch.searchsorted(seen, torch.minimum(draw, n_neg - 1) + 1)
    anchor = torch.arange(len(negative), device=negative.device)[:, None].expand_as(columns)
    return anchor[valid], columns[valid], picked[valid]


def label_groups(labels: Tensor) -> tuple[Tensor, Tensor]:
    """N x W columns of each row's same-label rows, and which are other rows than itself.

    W is the largest group; padding repeats the row itself, so every column is a same-label
    one. O(N W) from one sort of the labels, without an N x N mask.
    """
    rows = torch.arange(len(labels), device=labels.device)
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    offsets = torch.arange(int(counts.max()) if len(counts) else 0, device=labels.device)
    starts = (counts.cumsum(0) - counts)[:, None] + offsets
    group_of = torch.empty_like(order)
    group_of[order] = torch.repeat_interleave(
        torch.arange(len(counts), device=labels.device), counts
    )
    real = (offsets < counts[:, None])[group_of]
    columns = order[starts.clamp_max(len(order) - 1)][group_of]
    columns = torch.where(real, columns, rows[:, None])
    return columns, columns != rows[:, None]


def _hardest(scores: Tensor, labels: Tensor) -> Triplets:
    """Batch-hard triplets: per anchor, its farthest positive and its closest negative.

    Only the order within each row of `scores` matters (see distances.ranking_scores), and
    `scores` is overwritten: positives are gathered in O(N K), so that the one N x N pass left
    is the negatives' min (max/min return values and indices in one pass, argmax needs more).
    """
    columns, valid = label_groups(labels)
    far_score, far_slot = scores.gather(1, columns).masked_fill_(~valid, -float("inf")).max(1)
    far = columns.gather(1, far_slot[:, None]).flatten()
    near_score, near = scores.scatter_(1, columns, float("inf")).min(1)
    anchor = ((far_score > -float("inf")) & (near_score < float("inf"))).nonzero().flatten()
    return anchor, far[anchor], near[anchor]


def _semihard(dist: Tensor, columns: Tensor, valid: Tensor, negative: Tensor) -> Triplets:
    """FaceNet triplets: per pair, the closest negative with d(a,n) > d(a,p), else the farthest."""
    values, order = sorted_negatives(dist, negative)
    n_neg = negative.sum(1, keepdim=True)
    valid = valid & (n_neg > 0)
    beyond = torch.searchsorted(values, dist.gather(1, columns), right=True)
    pick = torch.minimum(beyond, n_neg - 1).clamp_min(0)
    negatives = order.gather(1, pick)
    anchor = torch.arange(len(dist), device=dist.device)[:, None].expand_as(columns)
    return anchor[valid], columns[valid], negatives[valid]
