"""Clustering by connected components of the threshold graph, against brute-force references."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tripletface import clustering


def brute_force_components(n: int, linked: np.ndarray) -> list[set[int]]:
    """Groups from the transitive closure of an n x n boolean adjacency matrix (Warshall)."""
    reach = linked | linked.T | np.eye(n, dtype=bool)
    for k in range(n):
        reach = reach | (reach[:, [k]] & reach[[k], :])
    return sorted({frozenset(np.flatnonzero(row)) for row in reach}, key=min)


def groups(labels: np.ndarray) -> list[set[int]]:
    return sorted({frozenset(np.flatnonzero(labels == label)) for label in set(labels)}, key=min)


points = arrays(
    np.float64,
    st.tuples(st.integers(0, 25), st.integers(1, 4)),
    elements=st.floats(-3, 3, allow_nan=False, width=32),
)


@given(points, st.floats(0.01, 4.0))
def test_edges_are_exactly_the_pairs_closer_than_the_threshold(x, threshold):
    edges = clustering.threshold_edges(x, threshold)
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    expected = {(i, j) for i in range(len(x)) for j in range(i + 1, len(x))}
    # Pairs within rounding of the threshold may fall either way; all others must match exactly.
    decided = {(i, j) for i, j in expected if abs(squared[i, j] - threshold) > 1e-9}
    close = {(i, j) for i, j in decided if squared[i, j] < threshold}
    got = {tuple(map(int, edge)) for edge in edges}
    assert close <= got
    assert not (got & decided) - close
    assert all(i < j for i, j in got)


@given(st.integers(1, 30), st.data())
def test_components_match_transitive_closure(n, data):
    linked = np.array(data.draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n)))
    linked = linked.reshape(n, n) & (np.random.default_rng(n).random((n, n)) < 0.1)
    edges = np.argwhere(np.triu(linked | linked.T, k=1))
    labels = clustering.connected_components(n, edges)
    assert groups(labels) == brute_force_components(n, linked)


def test_labels_are_ordered_by_size_then_smallest_member():
    edges = np.array([[1, 2], [4, 5], [5, 6], [0, 3]])
    labels = clustering.connected_components(8, edges)
    assert labels.tolist() == [1, 2, 2, 1, 0, 0, 0, 3]


def test_separated_blobs_form_one_cluster_each():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 10
    x = np.repeat(centres, 5, axis=0) + rng.normal(scale=0.01, size=(20, 16))
    labels = clustering.cluster_embeddings(x, threshold=1.0)
    assert groups(labels) == [set(range(5 * k, 5 * k + 5)) for k in range(4)]


def test_empty_input_gives_no_labels():
    assert clustering.cluster_embeddings(np.empty((0, 8)), 1.0).shape == (0,)
