"""Nearest enrolled faces of probe embeddings: exact search, or a FAISS index for large galleries.

Every index answers ``search(queries Q x D, k) -> (distances Q x k, rows Q x k)``: squared
Euclidean distances, ascending, and the rows of the N x D gallery matrix they belong to (k is cut
to N). ``ExactIndex`` is one matrix product per batch of probes and agrees with brute force;
``FaissIndex`` is an inverted file (IVF; Jégou et al. 2011, "Product quantization for nearest
neighbor search") that compares a probe only with the faces in the few cells nearest to it.
``GalleryIndex`` keeps either in step with a ``Gallery``.
"""

import json
import os
import secrets
from pathlib import Path

import numpy as np

from tripletface.errors import InputError
from tripletface.gallery import Gallery, Snapshot

#: Galleries with at least this many faces get a FAISS index under kind="auto" (when installed).
#: Below it exact search needs no build and takes a few ms per probe (bench/gallery_search.py:
#: 16 ms at 100k faces on a loaded 2-core machine, 130 ms at 1M, where FAISS takes ~10 ms).
AUTO_FAISS_ROWS = 200_000

# Candidates the float32 matrix product short-lists beyond k before distances are recomputed
# exactly in float64: the product's rounding (~1e-6) cannot push the true nearest that far down.
_SHORTLIST_EXTRA = 8

# k-means points per IVF cell: FAISS warns below 39; more only makes the build slower.
_SAMPLES_PER_CELL = 40

# Bytes of float32 distances one chunk of probes may hold (probes x N).
_CHUNK_BYTES = 64 << 20


def _matrix(embeddings, what: str, dim: int | None = None) -> np.ndarray:
    """Embeddings as a C-contiguous float32 N x D array, or InputError naming ``what``."""
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().cpu().numpy()
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2 or (dim is not None and matrix.shape[1] != dim):
        wanted = "N x D" if dim is None else f"N x {dim}"
        raise InputError(f"{what} must be {wanted}, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InputError(f"{what} contain NaN or infinite values")
    return matrix


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k (number of neighbours) must be an integer >= 1, got {k!r}")


class ExactIndex:
    """Exact k nearest rows by squared Euclidean distance (||q||^2 + ||g||^2 - 2 q.g, refined)."""

    def __init__(self, embeddings):
        self.matrix = _matrix(embeddings, "gallery embeddings")
        self._norms = np.einsum("ij,ij->i", self.matrix, self.matrix)

    def __len__(self) -> int:
        return len(self.matrix)

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    def search(self, queries, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q x k squared Euclidean distances ascending, Q x k row indices), k cut to N."""
        _check_k(k)
        queries = _matrix(queries, "probe embeddings", self.dim)
        k = min(k, len(self))
        out_d = np.empty((len(queries), k), dtype=np.float32)
        out_i = np.empty((len(queries), k), dtype=np.int64)
        if k == 0:
            return out_d, out_i
        chunk = max(1, _CHUNK_BYTES // (4 * len(self)))
        for start in range(0, len(queries), chunk):
            part = slice(start, start + chunk)
            out_d[part], out_i[part] = self._search(queries[part], k)
        return out_d, out_i

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # ||q||^2 is the same for every row of a probe, so it is left out of the ranking.
        scores = self._norms[None, :] - 2 * (queries @ self.matrix.T)
        short = min(k + _SHORTLIST_EXTRA, len(self))
        candidates = (
            np.argpartition(scores, short - 1, axis=1)[:, :short]
            if short < len(self)
            else np.broadcast_to(np.arange(len(self)), scores.shape)
        )
        return _refine(queries, self.matrix, candidates, k)


def _refine(
    queries: np.ndarray, matrix: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k of each probe's candidate rows nearest in float64, ties broken by the lower row."""
    diffs = matrix[candidates].astype(np.float64) - queries[:, None, :].astype(np.float64)
    exact = np.einsum("qcd,qcd->qc", diffs, diffs)
    order = np.lexsort((candidates, exact), axis=1)[:, :k]
    rows = np.take_along_axis(candidates, order, axis=1)
    return np.take_along_axis(exact, order, axis=1).astype(np.float32), rows.astype(np.int64)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError(
            "the FAISS index needs faiss-cpu: pip install 'tripletface[faiss]', "
            "or use exact search (kind='exact')"
        ) from None
    return faiss


def faiss_available() -> bool:
    """Is faiss-cpu importable?"""
    try:
        _faiss()
    except InputError:
        return False
    return True


class FaissIndex:
    """Approximate k nearest rows: an IVF index of 2 sqrt(N) cells, probing the nearest 1 in 12.

    Rows carry ids (ascending, default 0..N-1) so that faces can be added and removed without a
    rebuild; ``search`` reports positions in the current ascending id order, like ExactIndex.
    On clustered 128-d embeddings the nearest face agrees with exact search in >= 99% of probes
    at 1M faces (bench/gallery_search.py).
    """

    def __init__(self, embeddings, ids=None, seed: int = 0):
        faiss = _faiss()
        matrix = _matrix(embeddings, "gallery embeddings")
        ids = _ids(ids, len(matrix))
        if len(matrix) == 0:
            raise InputError("a FAISS index needs at least one embedding: enroll someone first")
        self.trained_rows = len(matrix)
        cells = int(np.clip(2 * np.sqrt(len(matrix)), 1, max(1, len(matrix) // _SAMPLES_PER_CELL)))
        self._index = faiss.IndexIVFFlat(faiss.IndexFlatL2(matrix.shape[1]), matrix.shape[1], cells)
        self._index.cp.seed = seed
        self._index.cp.niter = 10
        sample = np.random.default_rng(seed).permutation(len(matrix))[: _SAMPLES_PER_CELL * cells]
        self._index.train(matrix[np.sort(sample)])
        # 1 cell in 12: 99.7% top-1 agreement with exact search at 1M faces, 1 in 32 only 98.3%.
        self._index.nprobe = min(cells, max(32, cells // 12))
        self.ids = np.empty(0, dtype=np.int64)
        self.add(matrix, ids)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self._index.d

    def add(self, embeddings, ids) -> None:
        """Add N x D rows with N new ids, each larger than every id already in the index."""
        matrix = _matrix(embeddings, "gallery embeddings", self.dim)
        ids = _ids(ids, len(matrix))
        if len(ids) and len(self.ids) and ids[0] <= self.ids[-1]:
            raise InputError("new face ids must be larger than the ids already in the index")
        self._index.add_with_ids(matrix, ids)
        self.ids = np.concatenate([self.ids, ids])

    def remove(self, ids) -> None:
        """Remove the rows with these ids (unknown ids are ignored)."""
        ids = np.asarray(ids, dtype=np.int64)
        self._index.remove_ids(ids)
        self.ids = np.setdiff1d(self.ids, ids, assume_unique=True)

    def search(self, queries, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q x k squared Euclidean distances ascending, Q x k row indices), k cut to N."""
        _check_k(k)
        queries = _matrix(queries, "probe embeddings", self.dim)
        k = min(k, len(self))
        distances, found = self._index.search(queries, k)
        short = (found < 0).any(axis=1)
        if short.any():
            # The probed cells held fewer than k faces: look in every cell for these probes.
            nprobe = self._index.nprobe
            self._index.nprobe = self._index.nlist
            distances[short], found[short] = self._index.search(queries[short], k)
            self._index.nprobe = nprobe
        return distances, np.searchsorted(self.ids, found)

    def save(self, path: Path, stamp: dict) -> None:
        """Write the index and a stamp (which gallery state it holds) atomically to ``path``."""
        blob = _faiss().serialize_index(self._index)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "wb") as handle:
                np.savez(
                    handle,
                    stamp=np.frombuffer(json.dumps(stamp).encode(), dtype=np.uint8),
                    ids=self.ids,
                    index=blob,
                    trained_rows=np.int64(self.trained_rows),
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> tuple["FaissIndex", dict]:
        """(index, stamp) saved by ``save``; ValueError/OSError if the file is unusable."""
        with np.load(path) as saved:
            self = cls.__new__(cls)
            self._index = _faiss().deserialize_index(saved["index"])
            self.ids = saved["ids"].astype(np.int64)
            self.trained_rows = int(saved["trained_rows"])
            stamp = json.loads(saved["stamp"].tobytes().decode())
        if self._index.ntotal != len(self.ids):
            raise ValueError(f"{path}: index and ids disagree")
        return self, stamp


def _ids(ids, count: int) -> np.ndarray:
    """Row ids as int64, 0..count-1 by default; InputError unless strictly ascending."""
    ids = np.arange(count, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (count,) or (np.diff(ids) <= 0).any():
        raise InputError(f"ids must be {count} strictly ascending integers, one per row")
    return ids


def _kind(kind: str, rows: int) -> str:
    """The index kind to use: 'exact' or 'faiss' ('auto' decides by size and availability)."""
    if kind not in ("exact", "faiss", "auto"):
        raise InputError(f"index kind {kind!r} is unknown: use exact, faiss or auto")
    if kind == "auto":
        return "faiss" if rows >= AUTO_FAISS_ROWS and faiss_available() else "exact"
    return kind


def build_index(embeddings, kind: str = "auto", ids=None) -> ExactIndex | FaissIndex:
    """An index over N x D embeddings; 'auto' is FAISS from AUTO_FAISS_ROWS rows if installed."""
    matrix = _matrix(embeddings, "gallery embeddings")
    if _kind(kind, len(matrix)) == "faiss":
        return FaissIndex(matrix, ids)
    return ExactIndex(matrix)


class GalleryIndex:
    """A search index over a gallery's faces, brought up to date whenever the gallery changes.

    FAISS indexes are updated in place (faces added or removed by id) and, with ``persist``,
    saved next to the gallery file stamped with the gallery's generation, so that the next
    process loads it instead of building it; a file from another gallery is rebuilt.
    """

    def __init__(self, gallery: Gallery, kind: str = "auto", persist: bool = False):
        _kind(kind, 0)
        self.gallery = gallery
        self.kind = kind
        self.persist = persist
        self.path = gallery.path.with_name(gallery.path.name + ".faiss")
        self.index: ExactIndex | FaissIndex | None = None
        self.snapshot: Snapshot | None = None
        self._saved = -1  # generation of the gallery that the saved index file holds

    def search(self, queries, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q x k squared Euclidean distances, Q x k rows of ``names``), at the latest state."""
        self.refresh()
        return self.index.search(queries, k)

    @property
    def names(self) -> tuple[str, ...]:
        """The person of each row, as of the last search or refresh."""
        return self.snapshot.names

    def refresh(self) -> None:
        """Bring the index to the gallery's current generation (cheap when nothing changed)."""
        snapshot = self.gallery.snapshot()
        if self.snapshot is not None and snapshot.generation == self.snapshot.generation:
            return
        kind = _kind(self.kind, len(snapshot.ids))
        if kind == "exact" or len(snapshot.ids) == 0:
            self.index = ExactIndex(snapshot.matrix)
        else:
            self.index = self._faiss_index(snapshot)
        self.snapshot = snapshot

    def _faiss_index(self, snapshot: Snapshot) -> FaissIndex:
        index = self.index if isinstance(self.index, FaissIndex) else self._load(snapshot)
        if index is None or not 0.25 <= len(snapshot.ids) / index.trained_rows <= 4:
            # No index yet, or the gallery grew or shrank so much that its cells no longer fit.
            index = FaissIndex(snapshot.matrix, snapshot.ids)
        else:
            index.remove(np.setdiff1d(index.ids, snapshot.ids, assume_unique=True))
            new = np.isin(snapshot.ids, index.ids, invert=True, assume_unique=True)
            index.add(snapshot.matrix[new], snapshot.ids[new])
        if self.persist and self.gallery.writable and self._saved != snapshot.generation:
            stamp = {"gallery": self.gallery.uid, "generation": snapshot.generation}
            index.save(self.path, stamp)
            self._saved = snapshot.generation
        return index

    def _load(self, snapshot: Snapshot) -> FaissIndex | None:
        """The saved index of this gallery at this or an earlier generation, or None."""
        if not (self.persist and self.path.exists()):
            return None
        try:
            index, stamp = FaissIndex.load(self.path)
        except (OSError, ValueError, KeyError, RuntimeError):
            return None
        # Faces never change under an id, so an older index is brought up to date by id; a
        # newer one (the gallery file was restored from a backup) may not match: rebuild.
        if stamp.get("gallery") != self.gallery.uid or stamp["generation"] > snapshot.generation:
            return None
        self._saved = stamp["generation"]
        return index
