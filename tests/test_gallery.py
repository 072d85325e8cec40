"""The gallery contract, on both backends (a SQLite file and a real PostgreSQL server): schema,
all-or-nothing writes, the change log, encoder checks, a killed writer; then what only the SQLite
file has (bad files, read-only files) and what only a database server has (being down)."""

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tripletface.errors import GalleryError, GalleryUnavailable, InputError, PhotoTakenError
from tripletface.gallery import (
    SCHEMA_VERSION,
    BaseGallery,
    Gallery,
    base,
    check_name,
    default_gallery_path,
    open_gallery,
)

DIM = 8
SRC = Path(__file__).resolve().parents[1] / "src"


def gallery(path, **kwargs) -> Gallery:
    return Gallery(path, "toy", "fp-1", DIM, **kwargs)


def rows(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "people.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path) -> str:
    """Where a gallery lives: a file path or a database URL (a fresh one per test)."""
    if request.param == "sqlite":
        return str(tmp_path / "people.db")
    return request.getfixturevalue("postgres_url")


def opened(where: str, encoder: str = "toy", version: str = "fp-1", **kwargs):
    return open_gallery(where, encoder, version, DIM, **kwargs)


def test_schema_tables_columns_and_wal(db):
    gallery(db).close()
    conn = sqlite3.connect(db)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"persons", "faces", "removed", "meta", "schema_version"} <= tables
    columns = {row[1] for row in conn.execute("PRAGMA table_info(faces)")}
    assert {"person_id", "embedding", "generation", "sha256", "box_left", "box_bottom"} <= columns
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert conn.execute(
        "SELECT encoder_name, encoder_version, embedding_dim FROM meta"
    ).fetchall() == [("toy", "fp-1", DIM)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not list(db.parent.glob(".*.tmp")), "the temporary file of the creation was left behind"


def test_a_killed_creators_temporary_and_its_sqlite_files_go_at_the_next_creation(db):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    leftovers = [
        db.with_name(f".{db.name}.{child.pid}-{'0' * 16}.tmp{end}") for end in ("", "-wal", "-shm")
    ]
    for leftover in leftovers:
        leftover.write_bytes(b"")
    gallery(db).close()
    assert not any(leftover.exists() for leftover in leftovers)


def test_add_people_remove_and_round_trip(where):
    ada, bob = rows(2, seed=1), torch.from_numpy(rows(1, seed=2))
    with opened(where) as g:
        ids = g.add_faces("ada", ada, ["a1.jpg", "a2.jpg"], ["h1", "h2"], [(1, 2, 3, 4), None])
        bob_ids = g.add_faces("bob", bob, ["b.jpg"], ["h3"], [(5, 6, 7, 8)])
        assert ids == sorted(ids) and len(set(ids)) == 2 and bob_ids[0] > ids[-1]
        assert g.people() == [("ada", 2), ("bob", 1)] and g.face_count() == 3
        assert not g.is_empty()
        assert g.hash_owner("h2") == "ada" and g.hash_owner("h3") == "bob"
        assert g.hash_owner("h4") is None
    with opened(where) as g:
        matrix, names = g.embeddings()
        np.testing.assert_array_equal(matrix, np.concatenate([ada, bob.numpy()]))
        assert tuple(names) == ("ada", "ada", "bob") and matrix.dtype == np.float32
        assert names == ["ada", "ada", "bob"] and names[1:] == ["ada", "bob"]
        np.testing.assert_array_equal(g.faces_of("ada"), ada)
        assert g.faces_of("nobody").shape == (0, DIM)
        np.testing.assert_array_equal(g.embeddings_of([bob_ids[0], ids[0]]), matrix[[2, 0]])
        with pytest.raises(InputError, match="not in"):
            g.embeddings_of([bob_ids[0] + 100])
        gone = g.embeddings_of([bob_ids[0] + 100, ids[1]], missing_ok=True)
        assert np.isnan(gone[0]).all() and (gone[1] == matrix[1]).all()
        assert g.names_of([*ids, *bob_ids, 10**9]) == {
            ids[0]: "ada",
            ids[1]: "ada",
            bob_ids[0]: "bob",
        }
        assert g.remove("ada") == 2
        assert g.people() == [("bob", 1)] and g.face_count() == 1
        np.testing.assert_array_equal(g.embeddings()[0], bob.numpy())
        with pytest.raises(InputError, match=r"'ada' is not enrolled.*tripletface people"):
            g.remove("ada")


def test_more_faces_for_a_known_person_and_faces_of_removed_people_are_deleted(where):
    with opened(where) as g:
        g.add_faces("ada", rows(1))
        g.add_faces("ada", rows(2, seed=3))
        assert g.people() == [("ada", 3)]
        g.remove("ada")
        assert g.face_count() == 0 and g.people() == [] and g.is_empty()
        assert len(g.embeddings()[0]) == 0


def test_the_change_log_tells_a_reader_what_changed(where):
    with opened(where) as g:
        ada = g.add_faces("ada", rows(2))
        start = g.generation
        bob = g.add_faces("bob", rows(3, seed=1))
        cid = g.add_faces("cid", rows(1, seed=2))
        g.remove("ada")
        g.remove("cid")
        changes = g.changes(start)
        assert changes.generation == g.generation == start + 4
        np.testing.assert_array_equal(changes.ids, bob)  # cid came and went
        np.testing.assert_array_equal(changes.matrix, rows(3, seed=1))
        assert sorted(changes.removed) == sorted(ada + cid)
        added = dict(zip(changes.removed.tolist(), changes.removed_added.tolist(), strict=True))
        assert added[ada[0]] <= start < added[cid[0]]
        assert changes.faces == 3
        nothing = g.changes(g.generation)
        assert len(nothing.ids) == len(nothing.removed) == 0 and nothing.faces == 3


def test_embeddings_are_cached_until_any_connection_writes(where):
    with opened(where) as first, opened(where) as second:
        first.add_faces("ada", rows(1))
        cached = first.embeddings()
        assert first.embeddings()[0] is cached[0]
        before = first.generation
        second.add_faces("bob", rows(1, seed=5))
        assert first.generation == before + 1
        assert first.embeddings()[1] == ("ada", "bob")
        second.threshold = 0.3
        assert first.threshold == 0.3 and first.generation == before + 1


def test_failed_batch_stores_nothing(where):
    with opened(where) as g:
        g.add_faces("ada", rows(1))
        generation, people = g.generation, g.people()
        # The third box is malformed: the two faces before it must not be stored either.
        with pytest.raises(ValueError):
            g.add_faces("bob", rows(3), boxes=[(0, 0, 1, 1), (0, 0, 1, 1), ("x", 0, 1, 1)])
        # Too large for a box column: refused inside the transaction, after the person was added.
        with pytest.raises((OverflowError, GalleryError)):
            g.add_faces("bob", rows(2), sources=["a", "b"], boxes=[(0, 0, 1, 1), (0, 0, 1, 2**70)])
        assert g.people() == people and g.generation == generation
        assert len(g.embeddings()[1]) == 1 and g.changes(0).faces == 1


def test_a_photo_belongs_to_one_person(where):
    with opened(where) as g:
        g.add_faces("ada", rows(1), sources=["ada.jpg"], hashes=["h1"])
        generation = g.generation
        with pytest.raises(GalleryError, match=r"^b.jpg: this photo is already enrolled as 'ada'"):
            g.add_faces("bob", rows(2), sources=["new.jpg", "b.jpg"], hashes=["h2", "h1"])
        assert g.people() == [("ada", 1)] and g.generation == generation  # all or none
        assert len(g.add_faces("ada", rows(1), hashes=["h1"])) == 1  # its own photo: allowed
        assert len(g.add_faces("bob", rows(2), hashes=[None, None])) == 2  # no hash, no owner


def hash_lookups(g: BaseGallery, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements that read content hashes, recorded from now on as ``g`` runs them."""
    seen = []
    run = g._run

    def recording(sql: str, params: tuple = (), writing: bool = False):
        """``g._run``, noting the statement first."""
        if sql.lstrip().upper().startswith("SELECT") and "sha256" in sql:
            seen.append(sql)
        return run(sql, params, writing)

    monkeypatch.setattr(g, "_run", recording)
    return seen


def test_a_batchs_photos_are_looked_up_in_one_query_per_chunk_of_hashes(where, monkeypatch):
    count = 1200  # more hashes than SQLite takes parameters in one statement
    hashes = [f"h{i}" for i in range(count)]
    with opened(where) as g:
        lookups = hash_lookups(g, monkeypatch)
        g.add_faces("ada", rows(count), hashes=hashes)
        assert len(lookups) == -(-count // base.IN_CHUNK)
        generation = g.generation
        taken = [f"new{i}" for i in range(count - 1)] + [hashes[-1]]
        sources = [f"bob/{i}.jpg" for i in range(count)]
        with pytest.raises(PhotoTakenError, match=rf"^bob/{count - 1}.jpg: .* enrolled as 'ada'"):
            g.add_faces("bob", rows(count), sources=sources, hashes=taken)
        assert g.generation == generation and g.counts() == (1, count)


def test_faces_a_person_already_has_are_skipped_when_asked_and_nothing_moves(where):
    with opened(where) as g:
        assert g.add_faces("ada", rows(2), hashes=["h1", "h2"], skip_enrolled=True) == [1, 2]
        generation = g.generation
        assert g.add_faces("ada", rows(2), hashes=["h2", "h1"], skip_enrolled=True) == [None] * 2
        assert g.generation == generation  # nothing written: no change for readers to fetch
        ids = g.add_faces("ada", rows(4), hashes=["h3", "h1", "h3", None], skip_enrolled=True)
        assert ids[1:3] == [None, None] and None not in (ids[0], ids[3])
        assert g.add_faces("ada", rows(1), hashes=["h1"]) != [None]  # not asked: added again
        assert g.counts() == (1, 5)


def test_counts_agree_with_the_people_list(where):
    with opened(where) as g:
        assert g.counts() == (0, 0)
        g.add_faces("ada", rows(2))
        g.add_faces("bob", rows(1, seed=1))
        g.add_faces("ada", rows(3, seed=2))
        g.add_faces("carl", rows(1, seed=3))
        g.remove("bob")
        people = g.people()
        assert g.counts() == (len(people), sum(n for _, n in people)) == (2, 6)
        assert g.counts().faces == g.face_count()
        g.remove("ada")
        assert g.counts() == (1, 1)


@pytest.mark.parametrize("name", [".", ".."])
def test_names_a_url_path_cannot_carry_are_refused(name):
    with pytest.raises(InputError, match=r"URLs cannot carry it"):
        check_name(name)
    assert check_name("...") == "..." and check_name(".ada") == ".ada"


@pytest.mark.parametrize(
    ("name", "embeddings", "kwargs", "message"),
    [
        ("ada", rows(1)[:, :3], {}, "N x 8"),
        ("ada", np.zeros((0, DIM)), {}, "N >= 1"),
        ("ada", np.full((1, DIM), np.nan), {}, "NaN"),
        ("ada", rows(2), {"sources": ["one.jpg"]}, "one of each"),
    ],
)
def test_bad_additions_are_refused(db, name, embeddings, kwargs, message):
    with gallery(db) as g, pytest.raises(InputError, match=message):
        g.add_faces(name, embeddings, **kwargs)


@given(st.text(max_size=120))
def test_names_are_1_to_100_characters_without_control_ones_or_spaces_at_the_ends(name):
    good = 1 <= len(name) <= 100 and name == name.strip() and all(ord(c) >= 32 for c in name)
    good = good and not any(0x7F <= ord(c) <= 0x9F for c in name) and name not in (".", "..")
    if good:
        assert check_name(name) == name
    else:
        with pytest.raises(InputError, match="name"):
            check_name(name)


@pytest.mark.parametrize("name", ["", " ada", "ada ", "a\x00b", "x" * 101])
def test_every_writer_refuses_a_bad_name(db, name):
    with gallery(db) as g:
        with pytest.raises(InputError, match="name"):
            g.add_faces(name, rows(1, seed=0))
        g.add_faces("a/b Zoë", rows(1, seed=0))  # any other character is stored as given
        assert g.people() == [("a/b Zoë", 1)]


def test_threshold_and_calibration_are_stored(where):
    with opened(where) as g:
        assert g.threshold is None and g.calibration is None
        g.threshold = 0.42
        g.calibration = {"kind": "logistic", "weights": [1.5, -2.0], "n": 3}
        with pytest.raises(InputError, match="threshold"):
            g.threshold = -1.0
        with pytest.raises(InputError, match="JSON"):
            g.calibration = {"bad": float("nan")}
        with pytest.raises(InputError, match="dict"):
            g.calibration = [1, 2]
        generation = g.generation
    with opened(where) as g:
        assert g.threshold == pytest.approx(0.42) and g.generation == generation
        assert g.calibration == {"kind": "logistic", "weights": [1.5, -2.0], "n": 3}
        g.calibration = None
        assert g.calibration is None


def test_a_threshold_and_its_confidence_model_are_stored_together_or_not_at_all(where):
    model = {"kind": "logistic", "weights": [1.5, -2.0], "n": 3}
    with opened(where) as g:
        g.set_calibration(0.5, model)
        assert g.threshold == pytest.approx(0.5) and g.calibration == model
        for threshold, calibration in ((0.3, {"bad": float("nan")}), (-1.0, {"n": 1})):
            with pytest.raises(InputError):
                g.set_calibration(threshold, calibration)
        assert g.threshold == pytest.approx(0.5) and g.calibration == model
        g.set_calibration(None, None)
        assert g.threshold is None and g.calibration is None


def test_another_encoder_is_refused_with_both_names(where):
    with opened(where) as g:
        g.add_faces("ada", rows(1))
    with pytest.raises(GalleryError, match=r"built with encoder toy.*not facenet.*--encoder toy"):
        opened(where, "facenet")
    with pytest.raises(GalleryError, match=r"other weights of encoder toy.*fp-1.*fp-2"):
        opened(where, version="fp-2")
    with opened(where) as g:
        assert g.people() == [("ada", 1)]


def test_missing_gallery_is_not_created_when_reading(where):
    for kwargs in ({"read_only": True}, {"create": False}):
        with pytest.raises(GalleryError, match="no gallery"):
            opened(where, **kwargs)
    with opened(where) as g:
        assert g.generation == 0


def test_opened_read_only_refuses_writes(where):
    opened(where).close()
    with opened(where, read_only=True) as g, pytest.raises(GalleryError, match="opened read-only"):
        g.add_faces("ada", rows(1))


FACES_PER_PERSON = 40

ENROLLER = textwrap.dedent(
    f"""
    import sys
    import numpy as np
    from tripletface.gallery import open_gallery

    gallery = open_gallery(sys.argv[1], "toy", "fp-1", {DIM})
    rng = np.random.default_rng(0)
    for number in range(100000):
        name = f"person{{number:05d}}"
        faces = rng.standard_normal(({FACES_PER_PERSON}, {DIM})).astype(np.float32)
        sources = [f"{{name}}/{{i}}.jpg" for i in range({FACES_PER_PERSON})]
        gallery.add_faces(name, faces, sources, sources, [(0, 0, 10, 10)] * {FACES_PER_PERSON})
        print("enrolled", name, flush=True)
    """
)


@pytest.mark.parametrize("after", [3, 25])
def test_killed_writer_leaves_every_reported_person_whole(where, after):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen(
        [sys.executable, "-c", ENROLLER, where], stdout=subprocess.PIPE, text=True, env=env
    )
    reported = []
    try:
        while len(reported) < after:
            line = child.stdout.readline()
            assert line, "the enrolling process ended early"
            reported.append(line.split()[1])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    if not where.startswith("postgresql"):
        conn = sqlite3.connect(where)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    with opened(where) as g:
        people = dict(g.people())
        assert set(reported) <= set(people)
        # Whatever committed after the last report is whole too: no person has a partial batch.
        assert set(people.values()) == {FACES_PER_PERSON}
        assert len(g.embeddings()[0]) == FACES_PER_PERSON * len(people) == g.changes(0).faces
        g.add_faces("after the crash", rows(1))


def test_new_gallery_in_missing_folders(tmp_path):
    with gallery(tmp_path / "a" / "b" / "g.db") as g:
        assert g.people() == []


@pytest.mark.parametrize(
    "content",
    [b"these are not the bytes of a database" * 100, b"SQLite format 3\x00" + b"\x07" * 2000],
)
def test_corrupt_file_is_refused_and_left_alone(db, content):
    db.write_bytes(content)
    for read_only in (False, True):
        with pytest.raises(GalleryError, match=f"{db.name} is not a tripletface gallery"):
            gallery(db, read_only=read_only)
    assert db.read_bytes() == content


def test_other_database_or_schema_is_refused(db, tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(GalleryError, match=r"other\.db is not a tripletface gallery"):
        gallery(other)
    gallery(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(GalleryError, match="schema version 99"):
        gallery(db)


V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), encoder_name TEXT NOT NULL,
    encoder_version TEXT NOT NULL, embedding_dim INTEGER NOT NULL, threshold REAL,
    generation INTEGER NOT NULL, uid TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE persons (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created TEXT NOT NULL);
CREATE TABLE faces (id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE, embedding BLOB NOT NULL,
    source TEXT, sha256 TEXT, box_left INTEGER, box_top INTEGER, box_right INTEGER,
    box_bottom INTEGER, created TEXT NOT NULL);
INSERT INTO schema_version VALUES (1);
INSERT INTO meta VALUES (1, 'toy', 'fp-1', 8, 0.3, 2, 'abc', 'then');
INSERT INTO persons VALUES (1, 'ada', 'then');
"""


def test_a_version_1_gallery_is_upgraded_when_opened_for_writing(db):
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_SCHEMA)
        for seed in (1, 2):
            conn.execute(
                "INSERT INTO faces (person_id, embedding, created) VALUES (1, ?, 'then')",
                (rows(1, seed).tobytes(),),
            )
    with pytest.raises(GalleryError, match="schema version 1"):
        gallery(db, read_only=True)
    with gallery(db) as g:
        assert g.people() == [("ada", 2)] and g.threshold == pytest.approx(0.3)
        assert g.generation == 3 and len(g.changes(0).ids) == 0 and g.changes(-1).faces == 2
        np.testing.assert_array_equal(g.faces_of("ada"), np.concatenate([rows(1, 1), rows(1, 2)]))
        g.add_faces("bob", rows(1))
        g.remove("ada")
        assert g.people() == [("bob", 1)] and g.calibration is None


def test_damaged_embedding_is_reported(db):
    with gallery(db) as g:
        g.add_faces("ada", rows(1))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE faces SET embedding = x'00'")
    with gallery(db) as g, pytest.raises(GalleryError, match="wrong size"):
        g.embeddings()


@pytest.fixture
def honest_access(monkeypatch):
    """os.access as an unprivileged user sees it: root may write to read-only files."""
    if os.geteuid() == 0:
        real = os.access

        def access(path, mode, *args, **kwargs):
            if mode & os.W_OK and not os.stat(path).st_mode & 0o222:
                return False
            return real(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_read_only_gallery_reads_but_refuses_writes(tmp_path, honest_access, locked):
    folder = tmp_path / "shelf"
    db = folder / "people.db"
    with gallery(db) as g:
        g.add_faces("ada", rows(1))
    before = digest(db)
    (db if locked == "file" else folder).chmod(0o555)
    try:
        with gallery(db) as g:
            assert g.people() == [("ada", 1)]
            with pytest.raises(GalleryError, match=f"{db.name} cannot be changed.*read-only"):
                g.add_faces("bob", rows(1))
            with pytest.raises(GalleryError, match="read-only"):
                g.threshold = 0.5
    finally:
        (db if locked == "file" else folder).chmod(0o755)
    assert digest(db) == before


def test_no_new_gallery_in_a_read_only_folder(tmp_path, honest_access):
    folder = tmp_path / "shelf"
    folder.mkdir(mode=0o555)
    try:
        with pytest.raises(GalleryError, match=r"new\.db: cannot create.*read-only"):
            gallery(folder / "new.db")
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []


def test_read_only_without_a_shared_memory_file(db):
    with gallery(db) as g:
        g.add_faces("ada", rows(1))
    # As in a read-only folder: SQLite cannot create the WAL index file next to the gallery.
    Path(f"{db}-shm").mkdir()
    with gallery(db, read_only=True) as g:
        assert g.people() == [("ada", 1)]


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.setenv("TRIPLETFACE_GALLERY", str(tmp_path / "mine.db"))
    assert default_gallery_path() == tmp_path / "mine.db"
    monkeypatch.delenv("TRIPLETFACE_GALLERY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_gallery_path() == tmp_path / "data" / "tripletface" / "gallery.db"


def test_a_database_that_is_down_is_unavailable_then_back_by_itself(postgres, postgres_url):
    with opened(postgres_url) as g:
        g.add_faces("ada", rows(1))
        postgres.stop()
        try:
            with pytest.raises(GalleryUnavailable, match=r"cannot be reached.*try again") as caught:
                g.add_faces("bob", rows(1))
            assert caught.value.exit_code == 3 and "\n" not in str(caught.value)
            with pytest.raises(GalleryUnavailable):
                g.people()
            with pytest.raises(GalleryUnavailable):
                opened(postgres_url)
        finally:
            postgres.start()
        assert g.people() == [("ada", 1)]
        g.add_faces("bob", rows(1))
        assert g.people() == [("ada", 1), ("bob", 1)]


def test_password_is_not_shown(postgres):
    url = f"postgresql://tripletface:secret@127.0.0.1:{postgres.port + 1}/nowhere"
    with pytest.raises(GalleryUnavailable) as caught:
        opened(url)
    assert "secret" not in str(caught.value) and ":***@" in str(caught.value)
