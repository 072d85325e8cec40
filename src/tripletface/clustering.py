"""Grouping unlabelled embeddings by person: connected components of the threshold graph.

Two faces are linked when their squared Euclidean distance is below the threshold that decides
"same person"; a cluster is a connected component of that graph (single linkage cut at the
threshold). Unlike dlib's Chinese whispers it is deterministic and needs no iteration count.

At scale (bench/cluster_speed.py): each pair's distance is computed once (i < j), a tile of
1024 x 1024 at a time (memory stays bounded), by a float32 product that settles all but the
pairs within its rounding of the threshold, which float64 decides as a float64 pass would; each
part's links are joined into the components at once (a vectorised union-find) rather than
kept, so that a person with thousands of photos, and their millions of links, costs no memory.
"""

from collections.abc import Iterator

import numpy as np

# Rows and columns of a tile of distances computed at once (4 MB in float32): a matrix product
# this large keeps BLAS's threads busy on a loaded machine, where 512 took 4x as long.
_TILE = 1024
# Rows of a tile whose links are listed at once: at most 256 x 1024 pairs (~25 MB of indices,
# where all of them link).
_PART = 256

Links = tuple[np.ndarray, np.ndarray]


def _link_parts(embeddings: np.ndarray, threshold: float) -> Iterator[Links]:
    """The pairs (i, j), i < j, of N x D rows at squared Euclidean distance < threshold (in
    float64), as arrays of i and of j, a part of a tile of the distance matrix at a time."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.einsum("ij,ij->i", x, x)
    # ||a||^2 + ||b||^2 - 2 a.b as one product of rows [a, ||a||^2, 1] and [-2b, 1, ||b||^2]:
    # no temporaries beside it. In float32, unless the rows are too large for it.
    ones = np.ones((len(x), 1))
    kind = np.float32 if norms.max(initial=0.0) < 1e30 else np.float64
    left = np.hstack([x, norms[:, None], ones]).astype(kind)
    right = np.hstack([-2 * x, ones, norms[:, None]]).astype(kind)
    # Four times a bound on the product's error over the norms (rounding the rows, a (D + 2)-
    # term sum, underflow): a pair it puts further than that from the threshold is on that side.
    info = np.finfo(kind)
    error = 4 * (x.shape[1] + 8) * info.eps, 4 * (x.shape[1] + 8) * info.tiny
    for top in range(0, len(x), _TILE):
        for side in range(top, len(x), _TILE):
            rows, cols = slice(top, top + _TILE), slice(side, side + _TILE)
            slack = error[0] * (norms[rows].max() + norms[cols].max()) + error[1]
            approx = left[rows] @ right[cols].T
            for part in range(0, len(approx), _PART):
                block = approx[part : part + _PART]
                yield _links(block, (top + part, side), x, norms, threshold, slack)


def _links(
    approx: np.ndarray,
    corner: tuple[int, int],
    x: np.ndarray,
    norms: np.ndarray,
    threshold: float,
    slack: float,
) -> Links:
    """(i, j) of the pairs i < j linked in a block of approximate squared distances whose first
    row and column are ``corner``: those within ``slack`` of the threshold decided in float64."""
    # Flat indices: 20x faster than np.nonzero's pairs on a mask this sparse.
    close = np.flatnonzero(approx < threshold + slack)
    i, j = np.divmod(close, approx.shape[1])
    i += corner[0]
    j += corner[1]
    linked = i < j
    unsure = np.flatnonzero(linked & (approx.ravel()[close] >= threshold - slack))
    # ||a||^2 + ||b||^2 - 2 a.b in float64, as the old float64 pass over all pairs computed it.
    a, b = i[unsure], j[unsure]
    exact = norms[a] + norms[b] - 2.0 * np.einsum("ij,ij->i", x[a], x[b])
    linked[unsure[exact >= threshold]] = False
    return i[linked], j[linked]


def threshold_edges(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs (i, j), i < j, of N x D rows whose squared Euclidean distance is < threshold; E x 2."""
    parts = [np.stack(links, axis=1) for links in _link_parts(embeddings, threshold)]
    return np.concatenate([*parts, np.empty((0, 2), np.int64)])


def _roots(parent: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """The root of each node's tree in the forest ``parent``; their paths are cut short to it."""
    found = parent[nodes]
    while True:
        above = parent[found]
        if np.array_equal(above, found):
            break
        found = above
    parent[nodes] = found
    return found


def _shortcut(parent: np.ndarray, nodes: np.ndarray) -> None:
    """Point these nodes straight at their roots by pointer jumping: a chain of links hooked
    in one round (a person's photos along a path) is flattened in log(length) passes instead of
    being walked a step at a time by every later lookup."""
    while True:
        above = parent[parent[nodes]]
        if np.array_equal(above, parent[nodes]):
            return
        parent[nodes] = above


def _join(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join the trees of a[k] and b[k] for every k in ``parent``, a forest whose roots are the
    smallest node of their tree (each node's parent is itself or a smaller node)."""
    while len(a):
        a, b = _roots(parent, a), _roots(parent, b)
        apart = a != b
        a, b = np.minimum(a[apart], b[apart]), np.maximum(a[apart], b[apart])
        # Each larger root hangs under one of the smaller roots it is linked to; an edge whose
        # ends are still apart after that is joined by the next round.
        np.minimum.at(parent, b, a)
        _shortcut(parent, b)


def _labels(parent: np.ndarray) -> np.ndarray:
    """Canonical labels of the trees of the forest ``parent`` (see _relabel_by_size)."""
    nodes = np.arange(len(parent))
    _shortcut(parent, nodes)
    return _relabel_by_size(parent[nodes])


def connected_components(n: int, edges: np.ndarray) -> np.ndarray:
    """Component label per node 0..n-1 of an undirected graph given as E x 2 edges.

    Labels are 0, 1, ... in order of decreasing component size, ties broken by smallest member.
    """
    parent = np.arange(n)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    _join(parent, edges[:, 0], edges[:, 1])
    return _labels(parent)


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
    """Cluster label per row of N x D embeddings; rows linked at squared distance < threshold.

    Labels as ``connected_components`` gives them; memory stays within a tile of distances
    and the N labels, however many pairs are linked."""
    parent = np.arange(len(embeddings))
    for a, b in _link_parts(embeddings, threshold):
        _join(parent, a, b)
    return _labels(parent)
