"""Nearest enrolled faces of probe embeddings: exact search, or a FAISS index for large galleries.

Every index answers ``search(queries Q x D, k) -> (distances Q x k, labels Q x k)``: squared
Euclidean distances, ascending, and the rows of the N x D gallery matrix they belong to (or the
ids the rows were given; k is cut to N). ``ExactIndex`` is one matrix product per batch of probes
and agrees with brute force; ``FaissIndex`` is an inverted file (IVF; Jégou et al. 2011, "Product
quantization for nearest neighbor search") that compares a probe only with the faces in the few
cells nearest to it, storing them whole or, for tens of millions, product-quantised (IVF-PQ);
or, saved in place of an exact search, a flat list compared whole (its ranking re-done exactly).

``GalleryIndex`` keeps one in step with a gallery: a *base* index saved beside it (written by
whichever process builds or compacts it, opened memory-mapped by the others, never rewritten per
change) plus the gallery's changes since the base's generation, read from its change log and held
in memory; the base is compacted once those changes reach 10,000 faces or 1% of it, by the
readers that find them, and by each writer once its own changes do (``written``).
"""

import hashlib
import json
import os
import struct
from contextlib import suppress
from pathlib import Path

import numpy as np

from tripletface.cache import move_into_place, temporary_path
from tripletface.errors import GalleryUnavailable, InputError
from tripletface.gallery import BaseGallery

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

#: From this many faces an exact base is saved (as a flat FAISS index) rather than read from
#: the gallery by every process (bench/gallery_scale.py measures 100,000 faces).
SAVED_EXACT_ROWS = 20_000

#: From this many faces "auto" product-quantises them (IVF-PQ, PQ_BYTES bytes a face): whole
#: float32 faces would take 512 bytes each, 5 GB at 10M (bench/gallery_scale.py).
AUTO_PQ_ROWS = 4_000_000
PQ_BYTES = 32

# Training points for the product quantiser's 256 centroids per sub-vector.
_PQ_SAMPLES = 65_536

# Candidates a product-quantised base proposes beyond k, re-ranked by their exact distances.
_RERANKED = 16

# Changes held in memory beside the base before it is compacted: at least this many, or 1 in
# _DELTA_SHARE of the base. Every reader reads them from the change log, and every compaction
# rewrites the whole saved base (500 MB at 1M faces): this balances the two.
_DELTA_ROWS = 10_000
_DELTA_SHARE = 100

# A writer's own changes folded in when it closes the gallery, if more than this many: one
# enrolment does not rewrite the saved base, an import leaves none for readers to read.
_FLUSH_ROWS = 1_000

# Face names remembered by FaceNames before it forgets them all.
_NAMES_KEPT = 100_000

# The last 8 bytes of a saved index file; the 8 before them give the length of its JSON stamp.
_MAGIC = b"TFINDEX2"


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

    Rows carry ids (default 0..N-1), which ``search`` reports, so that faces can be added and
    removed without a rebuild. ``pq`` bytes per face product-quantise the stored faces (IVF-PQ,
    distances approximate) instead of keeping them whole. On clustered 128-d embeddings the
    nearest face of IVF agrees with exact search in >= 99% of probes at 1M faces
    (bench/gallery_search.py).
    """

    def __init__(
        self, embeddings, ids=None, seed: int = 0, pq: int | None = None, flat: bool = False
    ):
        faiss = _faiss()
        matrix = _matrix(embeddings, "gallery embeddings")
        ids = _ids(ids, len(matrix))
        if len(matrix) == 0:
            raise InputError("a FAISS index needs at least one embedding: enroll someone first")
        self.trained_rows = len(matrix)
        self.mapped = False
        if flat:
            # Every face compared (no cells): what a saved exact search is.
            self._index = faiss.IndexIDMap(faiss.IndexFlatL2(matrix.shape[1]))
            self.add(matrix, ids)
            return
        cells = int(np.clip(2 * np.sqrt(len(matrix)), 1, max(1, len(matrix) // _SAMPLES_PER_CELL)))
        if pq is None:
            quantizer = faiss.IndexFlatL2(matrix.shape[1])
            self._index = faiss.IndexIVFFlat(quantizer, matrix.shape[1], cells)
        else:
            # Tens of millions of faces: finding a face's cell among thousands through a graph
            # (HNSW) rather than against every centre is what keeps adding them affordable.
            quantizer = faiss.IndexHNSWFlat(matrix.shape[1], 32)
            # Sub-vectors must split D evenly: the largest count up to ``pq`` that does.
            pq = max(m for m in range(1, pq + 1) if matrix.shape[1] % m == 0)
            self._index = faiss.IndexIVFPQ(quantizer, matrix.shape[1], cells, pq, 8)
        self._index.cp.seed = seed
        self._index.cp.niter = 10
        samples = max(_SAMPLES_PER_CELL * cells, 0 if pq is None else _PQ_SAMPLES)
        sample = np.random.default_rng(seed).permutation(len(matrix))[:samples]
        self._index.train(matrix[np.sort(sample)])
        # 1 cell in 12: 99.7% top-1 agreement with exact search at 1M faces, 1 in 32 only 98.3%.
        self._index.nprobe = min(cells, max(32, cells // 12))
        self._graph_wide()
        self.add(matrix, ids)

    def _graph_wide(self) -> None:
        """Let a graph (HNSW) quantizer return every cell asked for: it stops at efSearch."""
        if self.kind == "flat":
            return
        quantizer = _faiss().downcast_index(self._index.quantizer)
        if hasattr(quantizer, "hnsw"):
            quantizer.hnsw.efSearch = max(quantizer.hnsw.efSearch, self._index.nprobe)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return self._index.d

    @property
    def kind(self) -> str:
        """'flat' (every face compared), 'faiss' (IVF, whole faces) or 'faiss-pq' (IVF-PQ)."""
        faiss = _faiss()
        if isinstance(self._index, faiss.IndexIDMap):
            return "flat"
        return "faiss" if isinstance(self._index, faiss.IndexIVFFlat) else "faiss-pq"

    @property
    def approximate(self) -> bool:
        """Are the distances to be recomputed exactly? Product-quantised faces, and flat ones
        (FAISS ranks them by ||q||^2 + ||g||^2 - 2 q.g in float32, so ExactIndex's exactness
        comes from re-ranking a few more candidates)."""
        return self.kind != "faiss"

    def add(self, embeddings, ids) -> None:
        """Add N x D rows with N ids not already in the index."""
        matrix = _matrix(embeddings, "gallery embeddings", self.dim)
        self._index.add_with_ids(matrix, _ids(ids, len(matrix)))

    def remove(self, ids) -> None:
        """Remove the rows with these ids (unknown ids are ignored)."""
        self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def search(self, queries, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q x k squared Euclidean distances ascending, Q x k ids), k cut to N."""
        _check_k(k)
        queries = _matrix(queries, "probe embeddings", self.dim)
        k = min(k, len(self))
        distances, found = self._index.search(queries, k)
        short = (found < 0).any(axis=1)
        if short.any() and self.kind != "flat":
            # The probed cells held fewer than k faces: look in every cell for these probes.
            nprobe = self._index.nprobe
            self._index.nprobe = self._index.nlist
            distances[short], found[short] = self._index.search(queries[short], k)
            self._index.nprobe = nprobe
        return distances, found

    def save(self, path: Path, stamp: dict) -> None:
        """Write the index and ``stamp`` (which gallery state it holds) atomically to ``path``."""
        tmp = temporary_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _faiss().write_index(self._index, str(tmp))
            size = tmp.stat().st_size
            with open(tmp, "r+b") as handle:
                record = {
                    **stamp,
                    "rows": len(self),
                    "trained_rows": self.trained_rows,
                    "bytes": size,
                    "digest": _sampled_digest(handle, size),
                }
                handle.seek(size)
                text = json.dumps(record).encode()
                handle.write(text + struct.pack("<Q", len(text)) + _MAGIC)
            move_into_place(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, mmap: bool = True) -> tuple["FaissIndex", dict]:
        """(index, stamp) saved by ``save``, its lists memory-mapped (read-only) if ``mmap``;
        ValueError if the file is not one, is truncated or fails its digest."""
        faiss = _faiss()
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, end - 16))
            tail = handle.read(16)
            if len(tail) != 16 or tail[8:] != _MAGIC:
                raise ValueError(f"{path}: not a saved index")
            length = struct.unpack("<Q", tail[:8])[0]
            handle.seek(max(0, end - 16 - length))
            stamp = json.loads(handle.read(length).decode())
            size = stamp["bytes"]
            if size + length + 16 != end or _sampled_digest(handle, size) != stamp["digest"]:
                raise ValueError(f"{path}: damaged (size or digest)")
        self = cls.__new__(cls)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        self._index = faiss.read_index(str(path), flags)
        self.trained_rows = int(stamp["trained_rows"])
        self.mapped = mmap
        self._graph_wide()
        if len(self) != stamp["rows"]:
            raise ValueError(f"{path}: holds {len(self)} faces, its stamp says {stamp['rows']}")
        return self, stamp


def _sampled_digest(handle, size: int) -> str:
    """SHA-256 over the first and last MiB of the first ``size`` bytes and 64 blocks between:
    catches truncation and replaced or overwritten files without reading all of a large one."""
    digest = hashlib.sha256(str(size).encode())
    block = 1 << 20
    inner = np.linspace(block, max(block, size - block), 64).astype(int).tolist()
    for start, length in [(0, block), *((i, 4096) for i in inner), (size - block, block)]:
        start = max(0, start)
        handle.seek(start)
        digest.update(handle.read(max(0, min(length, size - start))))
    return digest.hexdigest()


def _ids(ids, count: int) -> np.ndarray:
    """Row ids as int64, 0..count-1 by default; InputError unless unique."""
    ids = np.arange(count, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (count,) or len(np.unique(ids)) != count:
        raise InputError(f"ids must be {count} distinct integers, one per row")
    return np.ascontiguousarray(ids)


def _kind(kind: str, rows: int) -> str:
    """The index kind to use: 'exact', 'faiss' or 'faiss-pq' ('auto' decides by size and
    availability)."""
    if kind not in ("exact", "faiss", "faiss-pq", "auto"):
        raise InputError(f"index kind {kind!r} is unknown: use exact, faiss, faiss-pq or auto")
    if kind == "auto":
        if rows < AUTO_FAISS_ROWS or not faiss_available():
            return "exact"
        return "faiss-pq" if rows >= AUTO_PQ_ROWS else "faiss"
    return kind


def _saved_kind(kind: str, rows: int) -> str:
    """The kind of a base saved beside a gallery: exact search over more than SAVED_EXACT_ROWS
    faces is saved as a flat FAISS index, so that readers map it rather than read every face."""
    chosen = _kind(kind, rows)
    if chosen == "exact" and rows >= SAVED_EXACT_ROWS and faiss_available():
        return "flat"
    return chosen


def build_index(embeddings, kind: str = "auto", ids=None) -> ExactIndex | FaissIndex:
    """An index over N x D embeddings; 'auto' is FAISS from AUTO_FAISS_ROWS rows if installed."""
    matrix = _matrix(embeddings, "gallery embeddings")
    chosen = _kind(kind, len(matrix))
    if chosen == "exact":
        return ExactIndex(matrix)
    return FaissIndex(matrix, ids, pq=PQ_BYTES if chosen == "faiss-pq" else None)


class FaceNames:
    """Person name of a face id, fetched from the gallery in batches and remembered."""

    def __init__(self, gallery: BaseGallery):
        self.gallery = gallery
        self._known: dict[int, str | None] = {}

    def fetch(self, face_ids) -> None:
        """Look up the names of these face ids in one query (ids < 0 are ignored)."""
        wanted = {int(i) for i in np.asarray(face_ids).ravel() if i >= 0} - self._known.keys()
        if len(self._known) > _NAMES_KEPT:
            self._known.clear()
        if wanted:
            found = self.gallery.names_of(sorted(wanted))
            self._known.update({i: found.get(i) for i in wanted})

    def __getitem__(self, face_id) -> str | None:
        """The name, or None if that face is no longer enrolled."""
        self.fetch([face_id])
        return self._known.get(int(face_id))


class GalleryIndex:
    """A search index over a gallery's faces, brought up to date whenever the gallery changes.

    ``search`` reports face ids; ``names[face_id]`` is the person. With ``persist`` the base
    index is saved at ``gallery.index_path`` stamped with the gallery's id and generation, and
    the next process opens it memory-mapped and reads only the changes since; a file of another
    gallery, a newer one (the gallery was restored from a backup), or a damaged one is rebuilt.
    """

    def __init__(self, gallery: BaseGallery, kind: str = "auto", persist: bool = False):
        _kind(kind, 0)
        self.gallery = gallery
        self.kind = kind
        self.path: Path | None = gallery.index_path if persist else None
        self.names = FaceNames(gallery)
        self.index: ExactIndex | FaissIndex | None = None
        self._unsaved = 0  # faces this process changed since the saved base was last in step
        self._reset()

    def _reset(self) -> None:
        self.index = None
        self.generation = self._base_generation = -1
        self.faces = 0
        self._base_ids: np.ndarray | None = None  # face id of each ExactIndex row
        self._gone = np.empty(0, dtype=np.int64)  # removed since the base, sorted
        self._delta_ids = np.empty(0, dtype=np.int64)
        self._delta = ExactIndex(np.empty((0, self.gallery.embedding_dim), dtype=np.float32))

    def written(self, faces: int) -> None:
        """Note that this process changed ``faces`` faces of the gallery (a listener for
        ``gallery.on_change``): once its changes add up to what a reader would fold into the
        base, fold them in and save, so that no reader builds the index or reads more than that
        many changes, and no single change rewrites the saved file."""
        self._unsaved += faces
        if self._unsaved > self._delta_limit():
            self._catch_up(fold_all=False)

    def flush(self) -> None:
        """Fold this process's changes into the saved base now if more than _FLUSH_ROWS are
        not in it (a listener for ``gallery.on_close``): after an import, readers read none."""
        if self._unsaved > _FLUSH_ROWS:
            self._catch_up(fold_all=True)

    def _catch_up(self, fold_all: bool) -> None:
        """Bring the base to the gallery's generation (``refresh`` folds the changes in past
        the limit; ``fold_all`` folds in the rest too) and count what is still beside it."""
        self._unsaved = 0
        # The change is committed already: a database gone now must not make it look failed.
        # Whoever reads next catches up from the change log, as after any other writer.
        with suppress(GalleryUnavailable):
            # Below SAVED_EXACT_ROWS nothing is saved: readers search the faces read at once.
            if self._base_kind(self.gallery.face_count()) == "exact":
                return
            self.refresh()
            if fold_all and len(self._delta_ids) + len(self._gone):
                self._compact()
            self._unsaved = len(self._delta_ids) + len(self._gone)

    def search(self, queries, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q x k squared Euclidean distances, Q x k face ids), at the latest state."""
        _check_k(k)
        self.refresh()
        queries = _matrix(queries, "probe embeddings", self.gallery.embedding_dim)
        k = min(k, self.faces)
        approximate = getattr(self.index, "approximate", False)
        wide = min(k + len(self._gone) + _RERANKED * approximate, len(self.index))
        distances, labels = self.index.search(queries, wide) if wide else _none(len(queries))
        if self._base_ids is not None:
            labels = self._base_ids[labels]
        if len(self._gone):
            distances = np.where(np.isin(labels, self._gone), np.inf, distances)
        if approximate:
            distances = self._exact(queries, labels, distances)
        if len(self._delta):
            more_d, more = self._delta.search(queries, min(k, len(self._delta)))
            distances = np.concatenate([distances, more_d], axis=1)
            labels = np.concatenate([labels, self._delta_ids[more]], axis=1)
        order = np.lexsort((labels, distances), axis=1)[:, :k]
        labels = np.take_along_axis(labels, order, axis=1)
        self.names.fetch(labels)
        return np.take_along_axis(distances, order, axis=1), labels

    def _exact(self, queries: np.ndarray, labels: np.ndarray, distances: np.ndarray) -> np.ndarray:
        """Exact distances to the candidate faces (inf where ``distances`` is, or where another
        process removed the face since), their stored embeddings read from the gallery."""
        wanted = np.isfinite(distances) & (labels >= 0)
        unique, where = np.unique(labels[wanted], return_inverse=True)
        stored = self.gallery.embeddings_of(unique, missing_ok=True)[where]
        diffs = (
            stored.astype(np.float64)
            - np.broadcast_to(queries[:, None, :], (*labels.shape, queries.shape[1]))[wanted]
        )
        exact = np.full(labels.shape, np.inf, dtype=np.float32)
        exact[wanted] = np.einsum("nd,nd->n", diffs, diffs)
        return np.where(np.isnan(exact), np.inf, exact)

    def refresh(self) -> None:
        """Bring the index to the gallery's current generation (cheap when nothing changed)."""
        generation = self.gallery.generation
        if generation == self.generation:
            return
        if (
            self.index is None
            or generation < self.generation
            or not self._follow(self.gallery.changes(self.generation))
        ):
            self._start()

    def _start(self) -> None:
        """Open the saved base and catch up, or build a base from all the faces."""
        self._reset()
        loaded = self._load()
        if loaded is not None:
            self.index, stamp = loaded
            self.generation = self._base_generation = stamp["generation"]
            self.faces = len(self.index)
            if self._follow(self.gallery.changes(self.generation)):
                return
            self._reset()
        self._build()

    def _build(self) -> None:
        snapshot = self.gallery.snapshot()
        self._reset()
        self.generation = self._base_generation = snapshot.generation
        self.faces = len(snapshot.ids)
        self._set_base(snapshot.matrix, snapshot.ids)

    def _base_kind(self, rows: int) -> str:
        """The kind of base for this many faces: 'exact' (in memory), 'flat', 'faiss' or
        'faiss-pq' (saved if persisting)."""
        return _saved_kind(self.kind, rows) if self.path is not None else _kind(self.kind, rows)

    def _set_base(self, matrix: np.ndarray, ids: np.ndarray) -> None:
        """A new base over these faces (of ``self.generation``), saved if persisting."""
        kind = self._base_kind(len(ids))
        if kind == "exact" or len(ids) == 0:
            self.index, self._base_ids = ExactIndex(matrix), ids
        else:
            pq = PQ_BYTES if kind == "faiss-pq" else None
            self.index = FaissIndex(matrix, ids, pq=pq, flat=kind == "flat")
            self._base_ids = None
            self._save()

    def _follow(self, changes) -> bool:
        """Apply the gallery's changes since ``self.generation``; False if they do not add up
        (the base is not what its stamp says): the caller rebuilds."""
        existed = changes.removed[changes.removed_added <= self.generation]
        if self.faces + len(changes.ids) - len(existed) != changes.faces:
            return False
        keep = np.isin(self._delta_ids, changes.removed, invert=True)
        ids = np.concatenate([self._delta_ids[keep], changes.ids])
        matrix = np.concatenate([self._delta.matrix[keep], changes.matrix])
        in_base = changes.removed[changes.removed_added <= self._base_generation]
        self._gone = np.union1d(self._gone, in_base)
        self._delta_ids, self._delta = ids, ExactIndex(matrix)
        self.generation, self.faces = changes.generation, changes.faces
        if len(ids) + len(self._gone) > self._delta_limit():
            self._compact()
        return True

    def _delta_limit(self) -> int:
        """Changes held beside the base before it is compacted: _DELTA_ROWS, or 1% of the base."""
        return max(_DELTA_ROWS, 0 if self.index is None else len(self.index) // _DELTA_SHARE)

    def _compact(self) -> None:
        """Fold the changes into a new base (a new FAISS index if the gallery outgrew its cells)."""
        index = self.index
        fits = (
            isinstance(index, FaissIndex)
            and index.kind == self._base_kind(self.faces)
            # An IVF index's cells fit the faces it was trained on, up to 4 times as many.
            and (index.kind == "flat" or 0.25 <= self.faces / index.trained_rows <= 4)
        )
        if fits:
            if index.mapped:
                loaded = self._load(mmap=False)
                same = loaded is not None and loaded[1]["generation"] == self._base_generation
                index = loaded[0] if same else None
            if index is not None:
                index.remove(self._gone)
                index.add(self._delta.matrix, self._delta_ids)
                self.index, self._base_generation = index, self.generation
                self._gone = self._delta_ids = np.empty(0, dtype=np.int64)
                self._delta = ExactIndex(self._delta.matrix[:0])
                self._save()
                return
        self._build()

    def _save(self) -> None:
        if self.path is None:
            return
        # An index that cannot be saved is rebuilt by the next process: slower, still correct.
        # FAISS reports a file it cannot open or write as a RuntimeError, not an OSError.
        with suppress(OSError, RuntimeError):
            stamp = {"gallery": self.gallery.uid, "generation": self._base_generation}
            self.index.save(self.path, stamp)

    def _load(self, mmap: bool = True) -> tuple[FaissIndex, dict] | None:
        """(saved base, its stamp) of this gallery at or before its current generation, or None."""
        if self.path is None or not self.path.exists() or not faiss_available():
            return None
        try:
            index, stamp = FaissIndex.load(self.path, mmap)
        except (OSError, ValueError, KeyError, RuntimeError):
            return None
        if (
            stamp.get("gallery") != self.gallery.uid
            or stamp["generation"] > self.gallery.generation
        ):
            return None
        return index, stamp


def _none(queries: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((queries, 0), dtype=np.float32), np.empty((queries, 0), dtype=np.int64)
