"""Clustering by connected components of the threshold graph, against brute-force references."""

from unittest import mock

import cluster_reference
import numpy as np
from hypothesis import assume, given
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


def decided(x: np.ndarray, threshold: float) -> bool:
    """No pair of rows is within rounding of the threshold, where two correct ways of computing
    a distance may disagree."""
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    scale = 1 + (x**2).sum(1)[:, None] + (x**2).sum(1)[None, :]
    return bool((abs(squared - threshold) > 1e-9 * scale).all())


def faces(seed: int, n: int, dim: int, spread: float) -> np.ndarray:
    """n unit rows of dim scattered around n // 5 + 1 persons, like a photo library's faces."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 5 + 1, dim))
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(scale=spread, size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_as_before(x: np.ndarray, threshold: float, tile: int, part: int) -> None:
    """Clusters and links equal the old brute force's, with tiles of ``tile`` rows and columns
    whose links are listed ``part`` rows at a time."""
    with mock.patch.multiple(clustering, _TILE=tile, _PART=part):
        labels = clustering.cluster_embeddings(x, threshold)
        edges = clustering.threshold_edges(x, threshold)
    np.testing.assert_array_equal(labels, cluster_reference.cluster_embeddings(x, threshold))
    old = cluster_reference.threshold_edges(x, threshold)
    assert sorted(map(tuple, edges.tolist())) == sorted(map(tuple, old.tolist()))


@given(points, st.floats(0.01, 4.0), st.integers(1, 30), st.integers(1, 30))
def test_clusters_equal_the_old_brute_force_on_any_points(x, threshold, tile, part):
    assume(decided(x, threshold))
    assert_as_before(x, threshold, tile, part)


@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 300),
    st.sampled_from([2, 16, 128]),
    st.floats(0.05, 0.6),
    st.floats(0.05, 1.5),
    st.sampled_from([(7, 3), (64, 16), (1024, 256)]),
)
def test_clusters_equal_the_old_brute_force_on_faces(seed, n, dim, spread, threshold, tiling):
    x = faces(seed, n, dim, spread)
    assume(decided(x, threshold))
    assert_as_before(x, threshold, *tiling)


def test_huge_rows_are_clustered_in_float64():
    x = np.array([[1e20, 0.0], [1e20, 1e9], [-1e20, 0.0]])
    assert clustering.cluster_embeddings(x, 1e19).tolist() == [0, 0, 1]


def test_memory_stays_within_a_tile_however_many_faces_link():
    rng = np.random.default_rng(0)
    x = rng.normal(size=128) + rng.normal(scale=0.02, size=(2500, 128))
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # one person: all 3 million pairs link
    labels, peak = cluster_reference.peak_memory(clustering.cluster_embeddings, x, 1.0)
    assert labels.tolist() == [0] * 2500
    assert peak < 40 * 2**20  # the old brute force held every link: 150 MB for these


def test_a_chain_of_links_leaves_every_face_pointing_at_its_root():
    """Photos along a path (one person ageing) link in a chain: joined in one round, each then
    points straight at the root, so that later lookups take one step, not the chain's length."""
    n = 10_000
    parent = np.arange(n).view(Counted)
    clustering._join(parent, np.arange(n - 1), np.arange(1, n))
    assert (parent == 0).all()
    assert Counted.reads < 200  # a step at a time: ~2 n reads of the forest


class Counted(np.ndarray):
    """An array that counts how often it is indexed (the work, without a clock)."""

    reads = 0

    def __getitem__(self, key: object) -> np.ndarray:
        """The usual item, counted."""
        Counted.reads += 1
        return super().__getitem__(key)


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
