"""Search: exact against brute force, FAISS against exact, and indexes that follow a gallery."""

import itertools
import sqlite3
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tripletface import search
from tripletface.errors import GalleryUnavailable, InputError
from tripletface.gallery import Gallery, open_gallery
from tripletface.search import ExactIndex, FaissIndex, GalleryIndex, build_index

DIM = 16


def brute_force(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Q x N squared Euclidean distances in float64, one difference at a time."""
    diffs = queries[:, None, :].astype(np.float64) - gallery[None, :, :].astype(np.float64)
    return (diffs**2).sum(-1)


def clustered(persons: int, per_person: int, probes: int, seed: int = 0):
    """Unit-length faces scattered around person centres, and new faces of random persons."""
    rng = np.random.default_rng(seed)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    centres = unit(rng.standard_normal((persons, DIM)))
    faces = unit(
        np.repeat(centres, per_person, 0) + 0.15 * rng.standard_normal((persons * per_person, DIM))
    )
    chosen = centres[rng.integers(0, persons, probes)]
    return faces, unit(chosen + 0.15 * rng.standard_normal((probes, DIM)))


values = st.floats(-4, 4, width=32).map(lambda v: round(v, 1))


@given(
    data=st.data(),
    rows=st.integers(1, 40),
    dim=st.integers(1, 6),
    probes=st.integers(1, 5),
    k=st.integers(1, 12),
)
def test_exact_search_is_brute_force(data, rows, dim, probes, k):
    # Values on a 0.1 grid make ties frequent: then any of the tied rows is right.
    gallery = data.draw(arrays(np.float32, (rows, dim), elements=values))
    queries = data.draw(arrays(np.float32, (probes, dim), elements=values))
    distances, found = ExactIndex(gallery).search(queries, k)
    reference = brute_force(queries, gallery)
    kept = min(k, rows)
    assert distances.shape == found.shape == (probes, kept)
    np.testing.assert_allclose(distances, np.sort(reference, axis=1)[:, :kept], atol=1e-4)
    np.testing.assert_allclose(
        np.take_along_axis(reference, found, axis=1), distances, rtol=1e-6, atol=1e-4
    )
    assert all(len(set(row)) == kept for row in found.tolist())


def test_exact_search_over_many_rows_and_chunks(monkeypatch):
    monkeypatch.setattr(search, "_CHUNK_BYTES", 4 * 3000 * 7)  # 7 probes per chunk
    gallery, queries = clustered(300, 10, 50)
    distances, found = ExactIndex(torch.from_numpy(gallery)).search(queries, 5)
    reference = brute_force(queries, gallery)
    np.testing.assert_array_equal(found, np.argsort(reference, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(distances, np.sort(reference, axis=1)[:, :5], rtol=1e-6)


def test_faiss_agrees_with_exact_on_clustered_faces():
    gallery, queries = clustered(1000, 10, 400)
    _, exact = ExactIndex(gallery).search(queries, 1)
    index = FaissIndex(gallery)
    distances, found = index.search(queries, 3)
    assert (found[:, 0] == exact[:, 0]).mean() >= 0.99
    diffs = gallery[found].astype(np.float64) - queries[:, None, :]
    np.testing.assert_allclose((diffs**2).sum(-1), distances, rtol=1e-4, atol=1e-5)
    assert (np.diff(distances, axis=1) >= 0).all()


def test_faiss_add_and_remove_by_id_match_a_fresh_exact_index():
    gallery, queries = clustered(300, 4, 100)
    ids = np.arange(0, 2 * len(gallery), 2)
    index = FaissIndex(gallery[:800], ids[:800])
    index.add(gallery[800:], ids[800:])
    index.remove(ids[::3])
    kept = np.setdiff1d(np.arange(len(gallery)), np.arange(0, len(gallery), 3))
    assert len(index) == len(kept)
    # A probe equal to a stored face lies in that face's cell, so FAISS finds it exactly.
    _, found = index.search(gallery[kept], 1)
    np.testing.assert_array_equal(found[:, 0], ids[kept])
    _, exact = ExactIndex(gallery[kept]).search(queries, 1)
    assert (index.search(queries, 1)[1] == ids[kept][exact]).mean() >= 0.99
    with pytest.raises(InputError, match="distinct"):
        index.add(gallery[:2], [5, 5])


def test_ivf_pq_stores_few_bytes_a_face_and_mostly_agrees_with_exact():
    gallery, queries = clustered(200, 10, 300)
    index = FaissIndex(gallery, pq=4)
    assert index.approximate and not FaissIndex(gallery[:500]).approximate
    _, exact = ExactIndex(gallery).search(queries, 1)
    distances, found = index.search(queries, 10)
    # Codes of 4 bytes rank roughly; the exact nearest is nearly always among 10 candidates,
    # which GalleryIndex re-ranks with the gallery's stored faces.
    assert (found[:, 0] == exact[:, 0]).mean() >= 0.5
    assert (found == exact[:, :1]).any(axis=1).mean() >= 0.97
    assert (np.diff(distances, axis=1) >= 0).all()


def test_saved_index_round_trips_memory_mapped_and_refuses_damage(tmp_path):
    gallery, queries = clustered(200, 5, 50)
    index = FaissIndex(gallery, np.arange(len(gallery)) * 7)
    path = tmp_path / "x.faiss"
    index.save(path, {"gallery": "g", "generation": 3})
    for mmap in (True, False):
        loaded, stamp = FaissIndex.load(path, mmap)
        assert loaded.mapped == mmap and stamp["generation"] == 3 and stamp["rows"] == 1000
        np.testing.assert_array_equal(loaded.search(queries, 3)[1], index.search(queries, 3)[1])
    good = path.read_bytes()
    middle = bytearray(good)
    middle[100] ^= 0xFF  # the first MiB is always in the digest
    for bad in (b"garbage", good[:-100], good[: len(good) // 2] + good[-40:], bytes(middle)):
        path.write_bytes(bad)
        with pytest.raises(ValueError):
            FaissIndex.load(path)


def test_faiss_finds_k_even_when_probed_cells_are_short():
    gallery, queries = clustered(100, 20, 10)
    index = FaissIndex(gallery)
    _, found = index.search(queries, len(gallery))
    assert (found >= 0).all() and (np.sort(found, axis=1) == np.arange(len(gallery))).all()


def test_build_index_kinds(monkeypatch):
    gallery, _ = clustered(20, 5, 1)
    assert isinstance(build_index(gallery), ExactIndex)
    assert isinstance(build_index(gallery, "faiss"), FaissIndex)
    monkeypatch.setattr(search, "AUTO_FAISS_ROWS", 50)
    assert isinstance(build_index(gallery), FaissIndex)
    with pytest.raises(InputError, match="unknown"):
        build_index(gallery, "annoy")
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert isinstance(build_index(gallery), ExactIndex)
    with pytest.raises(InputError, match=r"pip install 'tripletface\[faiss\]'"):
        build_index(gallery, "faiss")


@pytest.mark.parametrize(
    ("queries", "k", "message"),
    [
        (np.zeros((1, 3)), 1, "N x 16"),
        (np.full((1, DIM), np.nan), 1, "NaN"),
        (np.zeros((1, DIM)), 0, "k"),
    ],
)
def test_bad_queries(queries, k, message):
    with pytest.raises(InputError, match=message):
        ExactIndex(np.zeros((2, DIM))).search(queries, k)


def test_empty_gallery_gives_no_neighbours():
    distances, found = ExactIndex(np.zeros((0, DIM))).search(np.zeros((2, DIM)), 1)
    assert distances.shape == found.shape == (2, 0)


def _check_against_exact(index: GalleryIndex, gallery: Gallery, queries: np.ndarray) -> None:
    """The index answers face ids, as exact search over the gallery's faces would."""
    _, found = index.search(queries, 1)
    snapshot = gallery.snapshot()
    _, exact = ExactIndex(snapshot.matrix).search(queries, 1)
    assert (found[:, 0] == snapshot.ids[exact[:, 0]]).mean() >= 0.99
    _, itself = index.search(snapshot.matrix, 1)
    np.testing.assert_array_equal(itself[:, 0], snapshot.ids)
    assert [index.names[i] for i in itself[::50, 0]] == snapshot.names[::50]


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if request.param == "sqlite":
        return str(tmp_path / "people.db")
    return request.getfixturevalue("postgres_url")


def no_build(*args, **kwargs):
    raise AssertionError("the saved index should have been opened, not rebuilt")


def test_gallery_index_follows_adds_and_removes_and_persists(where, monkeypatch):
    monkeypatch.setattr(search, "_DELTA_ROWS", 100)
    faces, queries = clustered(150, 8, 100)
    with open_gallery(where, "toy", "fp", DIM) as gallery:
        for person in range(100):
            gallery.add_faces(f"p{person}", faces[8 * person : 8 * person + 8])
        index = GalleryIndex(gallery, kind="faiss", persist=True)
        _check_against_exact(index, gallery, queries)
        built = index.index
        for person in range(100, 105):
            gallery.add_faces(f"p{person}", faces[8 * person : 8 * person + 8])
        gallery.remove("p3")
        _check_against_exact(index, gallery, queries)
        assert index.index is built, "small changes are held beside the base, not rebuilt"
        assert "p3" not in {index.names[i] for i in index.search(faces[24:32], 3)[1].ravel()}
        saved = FaissIndex.load(gallery.index_path)[1]
        for person in range(105, 150):  # 360 faces: more than 5% of the base, compacted
            gallery.add_faces(f"p{person}", faces[8 * person : 8 * person + 8])
        _check_against_exact(index, gallery, queries)
        compacted = FaissIndex.load(gallery.index_path)[1]
        assert compacted["generation"] == gallery.generation > saved["generation"]
        assert compacted["rows"] == gallery.face_count()

    monkeypatch.setattr(FaissIndex, "__init__", no_build)
    with open_gallery(where, "toy", "fp", DIM) as gallery:
        index = GalleryIndex(gallery, kind="faiss", persist=True)
        index.refresh()
        assert index.index.mapped and len(index.index) == gallery.face_count()
        # Another process changes the gallery: the saved base is caught up from the change log.
        with open_gallery(where, "toy", "fp", DIM) as other:
            other.remove("p7")
            other.add_faces("newcomer", faces[:2] + 0.01)
        _check_against_exact(index, gallery, queries)
        reopened = GalleryIndex(gallery, kind="faiss", persist=True)
        _check_against_exact(reopened, gallery, queries)
        names = {reopened.names[i] for i in reopened.search(faces[:2] + 0.01, 1)[1].ravel()}
        assert names == {"newcomer"}


def test_an_index_that_cannot_be_saved_still_answers(tmp_path, monkeypatch):
    import faiss

    def refuse(index, path: str) -> None:
        raise RuntimeError(f"Error in faiss::FileIOWriter: could not open {path} for writing")

    monkeypatch.setattr(faiss, "write_index", refuse)
    faces, queries = clustered(20, 4, 10)
    with open_gallery(tmp_path / "g.db", "toy", "fp", DIM) as gallery:
        for person in range(20):
            gallery.add_faces(f"p{person}", faces[4 * person : 4 * person + 4])
        index = GalleryIndex(gallery, kind="faiss", persist=True)
        _check_against_exact(index, gallery, queries)
        assert not gallery.index_path.exists()
        assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_a_writer_keeps_the_saved_index_in_step_so_readers_never_build_it(where, monkeypatch):
    monkeypatch.setattr(search, "_DELTA_ROWS", 40)
    monkeypatch.setattr(search, "AUTO_FAISS_ROWS", 100)
    faces, queries = clustered(120, 5, 50)
    saves = []
    save = FaissIndex.save
    monkeypatch.setattr(
        FaissIndex, "save", lambda self, *a: saves.append(len(self)) or save(self, *a)
    )
    with open_gallery(where, "toy", "fp", DIM) as gallery:
        writer = GalleryIndex(gallery, persist=True)
        gallery.on_change(writer.written)
        for person in range(120):  # an import, 5 faces at a time, never searched by the writer
            gallery.add_faces(f"p{person}", faces[5 * person : 5 * person + 5])
        gallery.remove("p0")
    # Nothing below the FAISS size; then saved whenever the changes outgrew what a reader holds
    # beside the base (40 faces, or 5%): a few whole saves for 600 faces, not one per change.
    assert saves and saves[0] > 100 and len(saves) <= 12
    assert all(b - a > 40 for a, b in itertools.pairwise(saves))
    monkeypatch.setattr(FaissIndex, "__init__", no_build)
    with open_gallery(where, "toy", "fp", DIM) as gallery:
        reader = GalleryIndex(gallery, persist=True)
        _check_against_exact(reader, gallery, queries)
        assert reader.index.mapped and len(reader._delta_ids) + len(reader._gone) <= 40


def test_a_writer_closing_folds_in_an_import_but_not_one_enrolment(where, monkeypatch):
    monkeypatch.setattr(search, "_DELTA_ROWS", 40)
    monkeypatch.setattr(search, "AUTO_FAISS_ROWS", 100)
    monkeypatch.setattr(search, "_FLUSH_ROWS", 10)
    faces, queries = clustered(121, 5, 50)

    def write(people: range, count: int) -> None:
        with open_gallery(where, "toy", "fp", DIM) as gallery:
            writer = GalleryIndex(gallery, persist=True)
            gallery.on_change(writer.written)
            gallery.on_close(writer.flush)
            for person in people:
                gallery.add_faces(f"p{person}", faces[5 * person : 5 * person + count])

    def reader_delta() -> int:
        with open_gallery(where, "toy", "fp", DIM) as gallery:
            reader = GalleryIndex(gallery, persist=True)
            _check_against_exact(reader, gallery, queries)
            return len(reader._delta_ids) + len(reader._gone)

    def saved() -> dict:
        with open_gallery(where, "toy", "fp", DIM) as gallery:
            return FaissIndex.load(gallery.index_path)[1]

    write(range(120), 5)
    imported = saved()
    assert imported["rows"] == 600 and reader_delta() == 0
    write(range(120, 121), 1)
    assert saved() == imported and reader_delta() == 1


def test_a_database_gone_after_the_commit_does_not_fail_the_write(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "_DELTA_ROWS", 4)
    monkeypatch.setattr(search, "SAVED_EXACT_ROWS", 1)

    def gone(self):
        raise GalleryUnavailable("the database went away")

    monkeypatch.setattr(GalleryIndex, "refresh", gone)
    faces, _ = clustered(2, 5, 1)
    with Gallery(tmp_path / "people.db", "toy", "fp", DIM) as gallery:
        gallery.on_change(GalleryIndex(gallery, persist=True).written)
        ids = gallery.add_faces("ada", faces[:5]) + gallery.add_faces("bob", faces[5:])
        assert gallery.face_count() == len(ids) == 10


def test_exact_search_over_many_faces_is_saved_flat_and_mapped_by_readers(where, monkeypatch):
    monkeypatch.setattr(search, "SAVED_EXACT_ROWS", 200)
    monkeypatch.setattr(search, "_DELTA_ROWS", 30)
    faces, queries = clustered(60, 5, 80)
    with open_gallery(where, "toy", "fp", DIM) as gallery:
        writer = GalleryIndex(gallery, persist=True)
        gallery.on_change(writer.written)
        for person in range(50):
            gallery.add_faces(f"p{person}", faces[5 * person : 5 * person + 5])
    saved, stamp = FaissIndex.load(gallery.index_path)
    assert saved.kind == "flat" and saved.approximate and stamp["rows"] > 200

    def no_snapshot(self):
        raise AssertionError("a reader of a saved base reads the changes, not every face")

    with open_gallery(where, "toy", "fp", DIM) as gallery:
        reader = GalleryIndex(gallery, persist=True)
        with monkeypatch.context() as patched:
            patched.setattr(type(gallery), "snapshot", no_snapshot)
            distances, found = reader.search(queries, 3)
        assert reader.index.mapped and reader.index.kind == "flat"
        snapshot = gallery.snapshot()
        exact_d, exact = ExactIndex(snapshot.matrix).search(queries, 3)
        np.testing.assert_array_equal(found, snapshot.ids[exact])
        np.testing.assert_allclose(distances, exact_d, rtol=1e-6, atol=1e-7)
        # Grown past the faces it may hold beside the base: compacted in place, still flat.
        for person in range(50, 60):
            gallery.add_faces(f"p{person}", faces[5 * person : 5 * person + 5])
        gallery.remove("p1")
        _check_against_exact(reader, gallery, queries)
        assert reader.index.kind == "flat" and len(reader.index) == gallery.face_count()


def test_saved_index_of_another_gallery_or_damaged_or_stale_is_rebuilt(tmp_path):
    faces, queries = clustered(30, 4, 20)
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    for path, rows in ((first, faces[:60]), (second, faces[60:])):
        with Gallery(path, "toy", "fp", DIM) as gallery:
            gallery.add_faces("x", rows)
            GalleryIndex(gallery, kind="faiss", persist=True).refresh()
    (tmp_path / "b.db.faiss").write_bytes((tmp_path / "a.db.faiss").read_bytes())
    with Gallery(second, "toy", "fp", DIM) as gallery:
        _check_against_exact(GalleryIndex(gallery, kind="faiss", persist=True), gallery, queries)
    (tmp_path / "b.db.faiss").write_bytes(b"garbage")
    with Gallery(second, "toy", "fp", DIM) as gallery:
        _check_against_exact(GalleryIndex(gallery, kind="faiss", persist=True), gallery, queries)
    # Faces deleted behind the gallery's back (no change logged): the saved base does not add
    # up with the gallery any more, and is rebuilt rather than trusted.
    with sqlite3.connect(second) as conn:
        conn.execute("DELETE FROM faces WHERE id IN (SELECT id FROM faces LIMIT 5)")
    with Gallery(second, "toy", "fp", DIM) as gallery:
        index = GalleryIndex(gallery, kind="faiss", persist=True)
        _check_against_exact(index, gallery, queries)
        assert not index.index.mapped and len(index.index) == 55


def test_product_quantised_base_is_re_ranked_with_the_stored_faces(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "PQ_BYTES", 4)
    faces, queries = clustered(200, 10, 200)
    with Gallery(tmp_path / "g.db", "toy", "fp", DIM) as gallery:
        for person in range(200):
            gallery.add_faces(f"p{person}", faces[10 * person : 10 * person + 10])
        index = GalleryIndex(gallery, kind="faiss-pq", persist=True)
        distances, found = index.search(queries, 3)
        assert index.index.approximate
        snapshot = gallery.snapshot()
        exact_d, exact = ExactIndex(snapshot.matrix).search(queries, 1)
        assert (found[:, 0] == snapshot.ids[exact[:, 0]]).mean() >= 0.97
        same = found[:, 0] == snapshot.ids[exact[:, 0]]
        np.testing.assert_allclose(distances[same, 0], exact_d[same, 0], rtol=1e-5, atol=1e-6)


def test_gallery_index_exact_tracks_changes(where):
    faces, queries = clustered(10, 3, 5)
    with open_gallery(where, "toy", "fp", DIM) as gallery:
        index = GalleryIndex(gallery)
        ada = gallery.add_faces("ada", faces[:3])
        assert set(index.search(queries, 1)[1].ravel()) <= set(ada)
        gallery.add_faces("bob", faces[3:])
        _check_against_exact(index, gallery, queries)
        gallery.remove("ada")
        _check_against_exact(index, gallery, queries)
        assert isinstance(index.index, ExactIndex)
        assert index.search(queries, 100)[1].shape == (5, 27)
