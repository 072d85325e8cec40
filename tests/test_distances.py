"""Distances between embeddings against their definitions, and their gradients."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tripletface.distances import KINDS, paired_distances, pairwise_distances
from tripletface.errors import InputError


def reference(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Distances from their definitions, one pair at a time."""
    out = torch.empty(len(x), len(y), dtype=torch.float64)
    for i, u in enumerate(x):
        for j, v in enumerate(y):
            if kind == "cosine":
                out[i, j] = 1 - u @ v / (u.norm() * v.norm())
            else:
                out[i, j] = ((u - v) ** 2).sum() ** (0.5 if kind == "euclidean" else 1)
    return out


@st.composite
def matrices(draw):
    n, m, d = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    x = torch.tensor(draw(st.lists(st.integers(-4, 4), min_size=n * d, max_size=n * d)))
    y = torch.tensor(draw(st.lists(st.integers(-4, 4), min_size=m * d, max_size=m * d)))
    return x.view(n, d).double(), y.view(m, d).double()


@pytest.mark.parametrize("kind", KINDS)
@given(xy=matrices())
def test_pairwise_matches_definition(kind, xy):
    x, y = xy
    if kind == "cosine":  # cosine is undefined for zero vectors
        x, y = x + 0.5, y + 0.5
    torch.testing.assert_close(pairwise_distances(x, y, kind), reference(x, y, kind))
    torch.testing.assert_close(
        pairwise_distances(x, kind=kind), reference(x, x, kind).fill_diagonal_(0)
    )
    rows = min(len(x), len(y))
    torch.testing.assert_close(
        paired_distances(x[:rows], y[:rows], kind), reference(x, y, kind).diagonal()[:rows]
    )


def test_expansion_rounding_never_gives_negative_or_nonzero_self_distance():
    x = torch.randn(50, 16) * 1e3
    x = torch.cat([x, x + 1e-4])
    dist = pairwise_distances(x)
    assert (dist >= 0).all()
    assert (dist.diagonal() == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_finite_differences(kind):
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: pairwise_distances(a, b, kind), (x, y))
    assert torch.autograd.gradcheck(lambda a: pairwise_distances(a, kind=kind), (x,))
    assert torch.autograd.gradcheck(lambda a, b: paired_distances(a, b[:4], kind), (x[:4], y))


def test_euclidean_gradient_is_zero_not_nan_at_zero_distance():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    pairwise_distances(x, kind="euclidean").sum().backward()
    assert torch.isfinite(x.grad).all()
    a = torch.ones(2, 3, requires_grad=True)
    paired_distances(a, a.detach(), "euclidean").sum().backward()
    assert (a.grad == 0).all()


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError, match="manhattan"):
        pairwise_distances(torch.zeros(2, 2), kind="manhattan")
    with pytest.raises(InputError, match="N x D"):
        pairwise_distances(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(InputError, match="N x D"):
        paired_distances(torch.zeros(2, 2), torch.zeros(3, 2))
