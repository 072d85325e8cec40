"""Grouping unlabelled embeddings by person: connected components of the threshold graph.

Two faces are linked when their squared Euclidean distance is below the threshold that decides
"same person"; a cluster is a connected component of that graph (single linkage cut at the
threshold). Unlike dlib's Chinese whispers it is deterministic and needs no iteration count.
"""

import numpy as np

_BLOCK_ROWS = 1024


def threshold_edges(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs (i, j), i < j, of N x D rows whose squared Euclidean distance is < threshold; E x 2."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.einsum("ij,ij->i", x, x)
    pairs = []
    # Blocks of rows keep memory at O(block x N) instead of O(N^2) for large photo libraries.
    for start in range(0, len(x), _BLOCK_ROWS):
        block = x[start : start + _BLOCK_ROWS]
        squared = norms[start : start + len(block), None] + norms[None, :] - 2.0 * block @ x.T
        rows, cols = np.nonzero(squared < threshold)
        rows = rows + start
        keep = rows < cols
        pairs.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)


def connected_components(n: int, edges: np.ndarray) -> np.ndarray:
    """Component label per node 0..n-1 of an undirected graph given as E x 2 edges.

    Labels are 0, 1, ... in order of decreasing component size, ties broken by smallest member.
    """
    parent = np.arange(n)

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving keeps the trees shallow
            node = parent[node]
        return node

    for a, b in np.asarray(edges, dtype=np.int64).reshape(-1, 2):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(n)], dtype=np.int64)
    return _relabel_by_size(roots)


def _relabel_by_size(roots: np.ndarray) -> np.ndarray:
    """Canonical labels: 0 for the largest group, ties broken by the group's smallest member."""
    if len(roots) == 0:
        return roots
    unique, first, inverse, counts = np.unique(
        roots, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -counts))
    rank = np.empty(len(unique), dtype=np.int64)
    rank[order] = np.arange(len(unique))
    return rank[inverse]


def cluster_embeddings(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster label per row of N x D embeddings; rows linked at squared distance < threshold."""
    return connected_components(len(embeddings), threshold_edges(embeddings, threshold))
