"""tripletface.clustering as it was before it scaled, kept as the reference the new one must
equal (tests/test_clustering.py) and the baseline bench/cluster_speed.py times: every pair's
squared distance from 1024 rows x N columns at a time, every edge kept, then joined one edge at
a time in Python. Also how both measure memory."""

import tracemalloc
from collections.abc import Callable

import numpy as np

from tripletface.clustering import _relabel_by_size

_BLOCK_ROWS = 1024


def threshold_edges(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs (i, j), i < j, of N x D rows whose squared Euclidean distance is < threshold; E x 2."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.einsum("ij,ij->i", x, x)
    pairs = []
    for start in range(0, len(x), _BLOCK_ROWS):
        block = x[start : start + _BLOCK_ROWS]
        squared = norms[start : start + len(block), None] + norms[None, :] - 2.0 * block @ x.T
        rows, cols = np.nonzero(squared < threshold)
        rows = rows + start
        keep = rows < cols
        pairs.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)


def connected_components(n: int, edges: np.ndarray) -> np.ndarray:
    """Component label per node 0..n-1 of an undirected graph given as E x 2 edges, by size."""
    parent = np.arange(n)

    def root(node: int) -> int:
        """The node's root, halving its path."""
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in np.asarray(edges, dtype=np.int64).reshape(-1, 2):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(n)], dtype=np.int64)
    return _relabel_by_size(roots)


def cluster_embeddings(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster label per row of N x D embeddings; rows linked at squared distance < threshold."""
    return connected_components(len(embeddings), threshold_edges(embeddings, threshold))


def peak_memory(cluster: Callable, x: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """(labels, the most bytes Python and numpy held at once while ``cluster`` ran)."""
    tracemalloc.start()
    try:
        labels = cluster(x, threshold)
        return labels, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
