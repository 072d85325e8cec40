"""Distances between embeddings: squared Euclidean (FaceNet's default), Euclidean and cosine."""

import torch
from torch import Tensor

from tripletface.errors import InputError

#: Names accepted by every `distance=` / `kind=` argument in tripletface.
KINDS = ("squared", "euclidean", "cosine")


def check_kind(kind: str) -> None:
    """Raise InputError unless `kind` is one of KINDS."""
    if kind not in KINDS:
        raise InputError(f"distance {kind!r} is unknown: use one of {', '.join(KINDS)}")


def safe_sqrt(squared: Tensor) -> Tensor:
    """Element-wise sqrt of non-negative values whose gradient is 0 (not NaN or inf) at 0."""
    positive = squared > 0
    # sqrt is evaluated on 1 where the input is 0, so its derivative there stays finite.
    roots = torch.where(positive, squared, torch.ones_like(squared)).sqrt()
    return torch.where(positive, roots, torch.zeros_like(squared))


def pairwise_distances(x: Tensor, y: Tensor | None = None, kind: str = "squared") -> Tensor:
    """N x M distances between the rows of x (N x D) and y (M x D, default x); cosine = 1 - cos."""
    check_kind(kind)
    same = y is None
    y = x if y is None else y
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise InputError(
            f"embeddings must be N x D and M x D, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if kind == "cosine":
        xn = torch.nn.functional.normalize(x, dim=1)
        yn = xn if same else torch.nn.functional.normalize(y, dim=1)
        out = 1 - xn @ yn.T
    else:
        # ||x||^2 + ||y||^2 - 2 x.y in one fused product; rounding can make it slightly negative.
        out = torch.addmm((y * y).sum(1)[None, :], x, y.T, alpha=-2)
        out = (out + (x * x).sum(1)[:, None]).clamp_min(0)
    if same:
        # A row's distance to itself is exactly 0, whatever the rounding of the expansion.
        out.diagonal().zero_()
    return safe_sqrt(out) if kind == "euclidean" else out


def ranking_scores(x: Tensor, kind: str = "squared") -> Tensor:
    """N x N scores that order each row of x (N x D) like its distances to x's rows, cheaply.

    For squared and Euclidean distances ||x_i||^2 is constant along row i, so ||x_j||^2 - 2 x_i.x_j
    (one fused product, no clamp, no square root) ranks row i as the distances do: enough to mine.
    """
    check_kind(kind)
    if kind == "cosine":
        return pairwise_distances(x, kind=kind)
    return torch.addmm((x * x).sum(1)[None, :], x, x.T, alpha=-2)


def paired_distances(x: Tensor, y: Tensor, kind: str = "squared") -> Tensor:
    """N distances between row i of x and row i of y (both N x D); cosine = 1 - cos."""
    check_kind(kind)
    if x.shape != y.shape or x.ndim != 2:
        raise InputError(
            f"paired embeddings must both be N x D, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if kind == "cosine":
        return 1 - torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-12)
    squared = ((x - y) ** 2).sum(1)
    return safe_sqrt(squared) if kind == "euclidean" else squared
