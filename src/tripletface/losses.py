"""The triplet loss (Schroff et al. 2015, FaceNet) and its fused form over a labelled batch.

Per triplet the loss is max(d(a,p) - d(a,n) + margin, 0) with the squared Euclidean distance by
default; `soft=True` replaces the hinge by softplus(d(a,p) - d(a,n) + margin), the soft margin
of Hermans et al. 2017 (who use margin 0). A triplet is *active* when d(a,p) - d(a,n) + margin > 0,
i.e. when its hinge loss is positive.

``distillation_loss`` is the embedding-distillation term of fine-tuning: the squared distance
from each embedding to a fixed target row, the frozen pretrained network's embedding of the same
photo (of its clean version for a photo in a camera condition: Ge et al. 2018, "Low-resolution
face recognition in the wild via selective knowledge distillation"; of itself on clean photos,
which keeps what the network knew, as in "learning without forgetting", Li and Hoiem 2016).
"""

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from tripletface.distances import (
    check_kind,
    paired_distances,
    pairwise_distances,
    ranking_scores,
)
from tripletface.errors import InputError
from tripletface.mining import (
    check_batch,
    check_strategy,
    label_groups,
    negative_mask,
    select_triplets,
    sorted_negatives,
)

_REDUCTIONS = ("sum", "mean", "none")

#: Upper bound on the elements of one chunk of the soft-margin "all" loss (bounds its memory).
_SOFT_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class TripletStats:
    """What a batch's triplets looked like: counts, active fraction, mean d(a,p) and d(a,n)."""

    considered: int
    active: int
    active_fraction: float
    mean_ap: float
    mean_an: float

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain dict, e.g. for logging."""
        return asdict(self)


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    """Sum (the cost J), mean over all given terms, or the terms themselves."""
    if reduction not in _REDUCTIONS:
        raise InputError(f"reduction {reduction!r} is unknown: use one of {', '.join(_REDUCTIONS)}")
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean() if len(losses) else losses.sum()
    return losses


def _terms(d_ap: Tensor, d_an: Tensor, margin: float, soft: bool) -> Tensor:
    """Per-triplet loss from its two distances: the hinge, or softplus when `soft`."""
    violation = d_ap - d_an + margin
    return nn.functional.softplus(violation) if soft else violation.clamp_min(0)


def triplet_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 0.2,
    reduction: str = "sum",
    distance: str = "squared",
    soft: bool = False,
) -> Tensor:
    """Triplet loss of N x D anchors, positives and negatives; "sum" (J), "mean" or "none" (N)."""
    if not anchor.shape == positive.shape == negative.shape:
        raise InputError(
            f"anchor, positive and negative must have one shape, got {tuple(anchor.shape)}, "
            f"{tuple(positive.shape)} and {tuple(negative.shape)}"
        )
    d_ap = paired_distances(anchor, positive, distance)
    d_an = paired_distances(anchor, negative, distance)
    return _reduce(_terms(d_ap, d_an, margin, soft), reduction)


def batch_triplet_loss(
    embeddings: Tensor,
    labels: Tensor,
    strategy: str = "semihard",
    margin: float = 0.2,
    reduction: str = "mean",
    distance: str = "squared",
    soft: bool = False,
    active_only: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, TripletStats]:
    """Loss over the triplets `strategy` selects in an N x D batch with N labels, and their stats.

    "mean" averages over every selected triplet (zero-loss ones included), or over the active ones
    with `active_only`; "sum" adds them. A batch without any triplet (no anchor with both a
    positive and a negative) gives a zero loss, still connected to `embeddings`, and zero stats.
    "all" never materialises the triplets: it runs in O(N^2) memory. `generator` drives "random".
    """
    labels = check_batch(embeddings, labels)
    check_strategy(strategy)
    check_kind(distance)
    if reduction not in ("sum", "mean"):
        raise InputError(f"reduction {reduction!r} is unknown for a batch: use 'mean' or 'sum'")
    if soft and active_only:
        raise InputError("active_only averages positive hinge terms: use it with soft=False")
    if strategy == "all":
        total, stats = _all_triplets(embeddings, labels, margin, distance, soft)
    else:
        total, stats = _mined_triplets(
            embeddings, labels, strategy, margin, distance, soft, generator
        )
    if stats.considered == 0:
        return embeddings.sum() * 0, stats
    if reduction == "sum":
        return total, stats
    return total / max(stats.active if active_only else stats.considered, 1), stats


def _stats(considered: int, active: int, sum_ap: float, sum_an: float) -> TripletStats:
    """TripletStats from counts and the sums of d(a,p) and d(a,n) over the considered triplets."""
    if considered == 0:
        return TripletStats(0, 0, 0.0, 0.0, 0.0)
    return TripletStats(
        considered, active, active / considered, sum_ap / considered, sum_an / considered
    )


def _mined_triplets(
    embeddings: Tensor,
    labels: Tensor,
    strategy: str,
    margin: float,
    distance: str,
    soft: bool,
    generator: torch.Generator | None,
) -> tuple[Tensor, TripletStats]:
    """Summed loss over mined triplets; the mining itself carries no gradient.

    "hard" keeps N triplets: their distances are recomputed from the rows (backward O(N D)).
    The other strategies keep up to N^2 triplets: their distances are gathered from the N x N
    matrix (backward two N x N x D products, instead of scattering N^2 rows of D).
    """
    if strategy == "hard":
        with torch.no_grad():
            scores = ranking_scores(embeddings, kind=distance)
        a, p, n = select_triplets(scores, labels, strategy, generator, scratch=True)
        d_ap = paired_distances(embeddings[a], embeddings[p], distance)
        d_an = paired_distances(embeddings[a], embeddings[n], distance)
    else:
        dist = pairwise_distances(embeddings, kind=distance)
        a, p, n = select_triplets(dist.detach(), labels, strategy, generator)
        d_ap, d_an = dist[a, p], dist[a, n]
    total = _terms(d_ap, d_an, margin, soft).sum()
    with torch.no_grad():
        active = int((d_ap - d_an + margin > 0).sum())
        return total, _stats(len(a), active, float(d_ap.sum()), float(d_an.sum()))


def _all_triplets(
    embeddings: Tensor, labels: Tensor, margin: float, distance: str, soft: bool
) -> tuple[Tensor, TripletStats]:
    """Summed loss over every valid triplet in O(N^2) memory, from sorted negatives per anchor.

    For a pair (a, p), the hinge summed over negatives is cnt * (d_ap + margin) - sum of the cnt
    closest d_an, where cnt counts the negatives with d_an < d_ap + margin: a search in the
    anchor's sorted negatives and a lookup in their prefix sums.
    """
    dist = pairwise_distances(embeddings, kind=distance)
    negative = negative_mask(labels)
    with torch.no_grad():
        values, order = sorted_negatives(dist, negative)
    columns, valid = label_groups(labels)
    d_ap = dist.gather(1, columns)
    # float64 prefix sums: cnt * threshold - prefix is a difference of two large, close sums.
    threshold = d_ap.double() + margin
    count = torch.searchsorted(values, threshold.detach().to(values.dtype), right=False)
    count = torch.where(valid, count, 0)
    if soft:
        total = _SoftAllTriplets.apply(dist, columns, valid, negative, margin)
    else:
        nearest = dist.gather(1, order).double().cumsum(1)
        prefix = torch.cat([nearest.new_zeros(len(dist), 1), nearest], dim=1)
        per_pair = count * threshold - prefix.gather(1, count)
        total = torch.where(valid, per_pair, 0).sum().to(dist.dtype)
    with torch.no_grad():
        n_pos, n_neg = valid.sum(1), negative.sum(1)
        considered = int((n_pos * n_neg).sum())
        sum_ap = float((torch.where(valid, d_ap, 0).sum(1) * n_neg).sum())
        sum_an = float((torch.where(negative, dist, 0).sum(1) * n_pos).sum())
    return total, _stats(considered, int(count.sum()), sum_ap, sum_an)


class _SoftAllTriplets(torch.autograd.Function):
    """Sum of softplus(d_ap - d_an + margin) over all triplets, chunked over anchors.

    softplus does not split into per-pair sums, so each chunk forms its W x N slice of triplets;
    the gradient with respect to the N x N distances is accumulated in the forward pass so that
    no chunk has to be kept for the backward pass (memory stays O(N^2 + chunk)).
    """

    @staticmethod
    def forward(ctx, dist, columns, valid, negative, margin):
        grad = torch.zeros_like(dist)
        total = dist.new_zeros((), dtype=torch.float64)
        rows = max(1, _SOFT_CHUNK_ELEMENTS // max(1, columns.shape[1] * dist.shape[1]))
        for start in range(0, len(dist), rows):
            part = slice(start, start + rows)
            d_ap = dist[part].gather(1, columns[part])
            violation = d_ap[:, :, None] - dist[part, None, :] + margin
            mask = valid[part, :, None] & negative[part, None, :]
            terms = torch.where(mask, nn.functional.softplus(violation), 0)
            total += terms.sum(dtype=torch.float64)
            slope = torch.where(mask, torch.sigmoid(violation), 0)
            grad[part].scatter_add_(1, columns[part], slope.sum(2))
            grad[part] -= slope.sum(1)
        ctx.save_for_backward(grad)
        return total.to(dist.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None, None, None, None


def distillation_loss(embeddings: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Squared Euclidean distance from each of N x D embeddings to its N x D target row:
    "mean" over rows, "sum", or "none" (N); gradients flow into ``embeddings`` only."""
    return _reduce(paired_distances(embeddings, targets.detach()), reduction)


class TripletLoss(nn.Module):
    """`batch_triplet_loss` as a module: forward(embeddings, labels) -> loss; stats: last_stats."""

    def __init__(
        self,
        margin: float = 0.2,
        strategy: str = "semihard",
        distance: str = "squared",
        soft: bool = False,
        reduction: str = "mean",
        active_only: bool = False,
    ) -> None:
        super().__init__()
        check_strategy(strategy)
        check_kind(distance)
        self.margin, self.strategy, self.distance = margin, strategy, distance
        self.soft, self.reduction, self.active_only = soft, reduction, active_only
        self.last_stats: TripletStats | None = None

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The batch loss; the statistics of this call are kept in `self.last_stats`."""
        loss, self.last_stats = batch_triplet_loss(
            embeddings,
            labels,
            self.strategy,
            self.margin,
            self.reduction,
            self.distance,
            self.soft,
            self.active_only,
        )
        return loss

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, strategy={self.strategy!r}, distance={self.distance!r}, "
            f"soft={self.soft}, reduction={self.reduction!r}, active_only={self.active_only}"
        )
