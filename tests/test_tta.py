"""Mirror averaging: chips and their mirrors, and the unit-length mean of their embeddings."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tripletface.tta import mirror_average, with_mirrors


@given(
    arrays(np.uint8, st.tuples(st.integers(0, 4), st.integers(1, 5), st.integers(1, 5), st.just(3)))
)
def test_mirrors_follow_the_chips(chips):
    out = with_mirrors(chips)
    assert out.shape == (2 * len(chips), *chips.shape[1:])
    assert np.array_equal(out[: len(chips)], chips)
    for i in range(len(chips)):
        assert np.array_equal(out[len(chips) + i], chips[i][:, ::-1])


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 8)),
        elements=st.floats(-1, 1, width=32),
    )
)
def test_mirror_average_is_the_normalised_mean(rows):
    doubled = np.concatenate([rows, rows[::-1]])
    out = mirror_average(doubled)
    half = len(rows)
    for i in range(half):
        mean = doubled[i] + doubled[half + i]
        norm = np.linalg.norm(mean)
        if norm > 1e-6:
            assert out[i] == pytest.approx(mean / norm, abs=1e-5)
    with pytest.raises(ValueError, match="mirror"):
        mirror_average(np.zeros((3, 2)))
