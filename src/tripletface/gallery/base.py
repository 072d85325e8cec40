"""What every gallery backend does, written once over a DB-API connection; backends add the
connection, the dialect and how their errors read.

Schema (version 2): ``persons`` (name, number of faces), ``faces`` (a person's float32
embedding, the generation that added it, source file, content SHA-256, face box), ``removed``
(the id of every deleted face and the generations that added and deleted it), ``meta`` (the
encoder, the calibrated threshold and confidence model, the generation counter) and
``schema_version``. Every change to the faces is one transaction that first moves the
generation, which also serialises writers, so face ids grow in commit order and ``changes(g)``
(faces added and removed after generation g) lets a reader holding an index at g catch up
without reading the whole table.
"""

import json
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from typing import NamedTuple

import numpy as np

from tripletface.errors import GalleryError, InputError, PhotoTakenError

SCHEMA_VERSION = 2

# Placeholders: {id} an auto-incremented key whose values are never reused, {blob} bytes.
SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    encoder_name TEXT NOT NULL,
    encoder_version TEXT NOT NULL,
    embedding_dim INTEGER NOT NULL,
    threshold DOUBLE PRECISION,
    calibration TEXT,
    generation BIGINT NOT NULL,
    uid TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE persons (
    id {id},
    name TEXT NOT NULL UNIQUE,
    faces BIGINT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE faces (
    id {id},
    person_id BIGINT NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
    generation BIGINT NOT NULL,
    embedding {blob} NOT NULL,
    source TEXT,
    sha256 TEXT,
    box_left INTEGER,
    box_top INTEGER,
    box_right INTEGER,
    box_bottom INTEGER,
    created TEXT NOT NULL
);
CREATE INDEX faces_person ON faces(person_id);
CREATE INDEX faces_sha256 ON faces(sha256);
CREATE INDEX faces_generation ON faces(generation);
CREATE TABLE removed (
    face_id BIGINT PRIMARY KEY,
    added BIGINT NOT NULL,
    generation BIGINT NOT NULL
);
CREATE INDEX removed_generation ON removed(generation);
"""

# Faces read per query when reading many: bounds the Python objects alive at once.
_CHUNK = 32768

#: Values per ``IN (...)`` list: SQLite before 3.32 takes at most 999 parameters a statement.
IN_CHUNK = 500

Box = tuple[int, int, int, int]


class Names(Sequence):
    """Person names of N rows, looked up from their person ids on first use."""

    def __init__(self, person_ids: np.ndarray, lookup: Callable[[np.ndarray], dict[int, str]]):
        self.person_ids = person_ids
        self._lookup = lookup
        self._names: dict[int, str] | None = None

    def __len__(self) -> int:
        return len(self.person_ids)

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None

    def __getitem__(self, row):
        if self._names is None:
            self._names = self._lookup(np.unique(self.person_ids))
        if isinstance(row, slice):
            return [self._names.get(int(p)) for p in self.person_ids[row]]
        return self._names.get(int(self.person_ids[row]))


class Snapshot(NamedTuple):
    """The enrolled faces at one generation: face ids (N, ascending), N x D float32, names."""

    generation: int
    ids: np.ndarray
    matrix: np.ndarray
    names: Names


class Counts(NamedTuple):
    """How many persons are enrolled, and how many faces they have in all."""

    people: int
    faces: int


class Changes(NamedTuple):
    """What happened after a generation: faces added (ids, N x D) and still enrolled, faces
    removed (ids, and the generation that had added each), and the number of faces now."""

    generation: int
    ids: np.ndarray
    matrix: np.ndarray
    removed: np.ndarray
    removed_added: np.ndarray
    faces: int


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_uid() -> str:
    """A random identifier for a new gallery."""
    return secrets.token_hex(8)


#: Longest person name, in characters.
NAME_LENGTH = 100


def check_name(name: str) -> str:
    """``name`` if it can name a person: 1 to NAME_LENGTH characters, none of them a control
    character, no space at either end (else "ada" and "ada " would be two persons), not "." or
    ".." (a URL path segment browsers resolve away); else InputError. Any other character, "/"
    included, is stored as given."""
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_LENGTH:
        shown = name[:NAME_LENGTH] if isinstance(name, str) else name
        raise InputError(f"name {shown!r}: give 1 to {NAME_LENGTH} characters")
    if name != name.strip() or any(unicodedata.category(c) == "Cc" for c in name):
        raise InputError(
            f"name {name!r}: a name has no control characters and no spaces at either end"
        )
    if name in (".", ".."):
        raise InputError(f"name {name!r}: the service's URLs cannot carry it; choose another")
    return name


def _threshold_value(value: float | None) -> float | None:
    """A threshold as stored: a finite squared distance >= 0 as a float, or None."""
    if value is not None and not (np.isfinite(value) and value >= 0):
        raise InputError(f"threshold must be a finite distance >= 0, got {value}")
    return None if value is None else float(value)


class _Unchanged(Exception):  # noqa: N818 (never leaves add_faces)
    """Ends a write transaction that found nothing to write: rolled back, so that the
    generation does not move for readers to fetch an empty change."""


def _calibration_text(value: dict | None) -> str | None:
    """A confidence model as stored: its dict as strict JSON, or None."""
    if value is not None and not isinstance(value, dict):
        raise InputError(f"calibration must be a dict or None, got {type(value).__name__}")
    try:
        return None if value is None else json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InputError(f"calibration must be JSON-serialisable: {error}") from None


class BaseGallery:
    """Persons and their enrolled embeddings from one encoder, in a database.

    Subclasses open ``self._conn`` (autocommit; transactions are explicit), set ``location``
    (how messages name the gallery), ``writable`` and ``index_path`` (where a search index may
    be saved, or None), and say how their SQL and errors differ.
    """

    location: str
    writable: bool
    _why_not = "it was opened read-only"
    _placeholder = "?"
    _begin_write = "BEGIN"
    _begin_read = "BEGIN"
    _errors: tuple[type[BaseException], ...] = ()

    def __init__(self, encoder_name: str | None, embedding_dim: int | None):
        # None: an existing gallery of whichever encoder it holds (to copy it, for one).
        self.encoder_name = encoder_name
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        self._snapshot: Snapshot | None = None
        self._listeners: list[Callable[[int], None]] = []
        self._closing: list[Callable[[], None]] = []

    # ---- what backends provide

    def _conn_now(self):
        """The connection to use (a backend may reconnect a broken one)."""
        return self._conn

    def _error(self, error: BaseException, writing: bool) -> GalleryError:
        """The user's message for a database error."""
        raise NotImplementedError

    def close(self) -> None:
        """Run the ``on_close`` hooks, then close the database connection; the gallery cannot
        be used afterwards."""
        hooks, self._closing = self._closing, []
        for hook in hooks:
            hook()
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- SQL plumbing

    def _sql(self, sql: str) -> str:
        return sql if self._placeholder == "?" else sql.replace("?", self._placeholder)

    def _run(self, sql: str, params: tuple = (), writing: bool = False):
        """A cursor over one statement; database errors become GalleryErrors."""
        try:
            return self._conn_now().execute(self._sql(sql), params)
        except self._errors as error:
            raise self._error(error, writing) from None

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._run(sql, params).fetchall()
        except self._errors as error:
            raise self._error(error, False) from None

    def _value(self, sql: str, params: tuple = ()):
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[None]:
        """One transaction: everything inside is committed together or not at all."""
        if write and not self.writable:
            raise GalleryError(
                f"{self.location} cannot be changed: {self._why_not}; make it writable "
                "or use another --gallery"
            )
        self._run(self._begin_write if write else self._begin_read, writing=write)
        try:
            yield
            self._run("COMMIT", writing=write)
        except BaseException:
            # A connection that is gone took its transaction with it.
            with suppress(self._errors):
                self._conn_now().execute("ROLLBACK")
            raise

    def _bump(self) -> int:
        """Move the generation (first in a write: it locks out other writers); the new one."""
        return int(
            self._run(
                "UPDATE meta SET generation = generation + 1 RETURNING generation", writing=True
            ).fetchone()[0]
        )

    def _check(self, encoder_version: str) -> None:
        """Refuse a database that is not a gallery of this schema, or one of another encoder."""
        version = self._value("SELECT version FROM schema_version")
        stored = self._rows("SELECT encoder_name, encoder_version, embedding_dim FROM meta")
        if version != SCHEMA_VERSION or not stored:
            found = "no version" if version is None else f"version {version}"
            raise GalleryError(
                f"{self.location} has gallery schema {found}, this tripletface reads version "
                f"{SCHEMA_VERSION}: use another --gallery, or the tripletface that made it"
            )
        name, fingerprint, dim = stored[0]
        if self.encoder_name is None:
            self.encoder_name, self.embedding_dim, encoder_version = name, dim, fingerprint
        self.encoder_version = fingerprint
        if name != self.encoder_name or dim != self.embedding_dim:
            raise GalleryError(
                f"{self.location} was built with encoder {name} ({dim}-d), not "
                f"{self.encoder_name} ({self.embedding_dim}-d), and distances between them mean "
                f"nothing: use --encoder {name} with this gallery, or another --gallery for "
                f"{self.encoder_name}"
            )
        if fingerprint != encoder_version:
            raise GalleryError(
                f"{self.location} was built with other weights of encoder {name} (version "
                f"{fingerprint[:12]}, now {encoder_version[:12]}): use the encoder that built it, "
                "or enroll again into another --gallery"
            )

    # ---- the gallery's state

    @property
    def generation(self) -> int:
        """Number of committed changes to the faces: moves whenever embeddings() would."""
        return int(self._value("SELECT generation FROM meta"))

    @property
    def uid(self) -> str:
        """A random identifier given to this gallery when it was created."""
        return self._value("SELECT uid FROM meta")

    @property
    def threshold(self) -> float | None:
        """The calibrated distance threshold stored in the gallery, or None."""
        value = self._value("SELECT threshold FROM meta")
        return None if value is None else float(value)

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        with self._transaction(write=True):
            self._run("UPDATE meta SET threshold = ?", (_threshold_value(value),), True)

    @property
    def calibration(self) -> dict | None:
        """A stored confidence model (JSON-serialisable dict), or None."""
        text = self._value("SELECT calibration FROM meta")
        return None if text is None else json.loads(text)

    @calibration.setter
    def calibration(self, value: dict | None) -> None:
        with self._transaction(write=True):
            self._run("UPDATE meta SET calibration = ?", (_calibration_text(value),), True)

    def set_calibration(self, threshold: float | None, calibration: dict | None) -> None:
        """Store a threshold and the confidence model fitted with it in one transaction, so
        that no reader ever sees one without the other."""
        values = (_threshold_value(threshold), _calibration_text(calibration))
        with self._transaction(write=True):
            self._run("UPDATE meta SET threshold = ?, calibration = ?", values, True)

    # ---- changes

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(faces)`` after every change this object commits, with the number of
        faces it added or removed (a search index saved beside the gallery follows its writers)."""
        self._listeners.append(listener)

    def on_close(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` when this object is closed, before its connection is."""
        self._closing.append(hook)

    def _changed(self, faces: int) -> None:
        for listener in self._listeners:
            listener(faces)

    def add_faces(
        self,
        name: str,
        embeddings,
        sources: Sequence[str | None] | None = None,
        hashes: Sequence[str | None] | None = None,
        boxes: Sequence[Box | None] | None = None,
        skip_enrolled: bool = False,
    ) -> list[int | None]:
        """Store N x D embeddings as faces of ``name`` (created if new), all or none; their ids.

        A content hash already enrolled for another person is a PhotoTakenError: the same photo
        cannot show two persons (checked in the write's own transaction, so that two writers
        cannot both take it). With ``skip_enrolled``, a face whose content hash ``name`` is
        already enrolled from, or an earlier face of this call has, is not stored: its id is
        None (and when no face is left, nothing is written)."""
        matrix = self._checked(embeddings)
        count = len(matrix)
        sources, hashes, boxes = (
            [None] * count if column is None else list(column)
            for column in (sources, hashes, boxes)
        )
        check_name(name)
        if not len(sources) == len(hashes) == len(boxes) == count:
            raise InputError(
                f"add_faces got {count} embeddings but {len(sources)} sources, "
                f"{len(hashes)} hashes and {len(boxes)} boxes: give one of each per embedding"
            )
        stamp = now()
        faces = [
            (row.tobytes(), source, digest, *((None,) * 4 if box is None else map(int, box)))
            for row, source, digest, box in zip(matrix, sources, hashes, boxes, strict=True)
        ]
        kept: list[int] = []
        with suppress(_Unchanged), self._transaction(write=True):
            generation = self._bump()
            kept = self._kept(name, sources, hashes, skip_enrolled)
            if not kept:
                raise _Unchanged
            self._run(
                "INSERT INTO persons (name, faces, created) VALUES (?, 0, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, stamp),
                True,
            )
            person = self._value("SELECT id FROM persons WHERE name = ?", (name,))
            try:
                self._conn_now().cursor().executemany(
                    self._sql(
                        "INSERT INTO faces (person_id, generation, embedding, source, sha256,"
                        " box_left, box_top, box_right, box_bottom, created)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    ),
                    [(person, generation, *faces[k], stamp) for k in kept],
                )
            except self._errors as error:
                raise self._error(error, True) from None
            self._run(
                "UPDATE persons SET faces = faces + ? WHERE id = ?", (len(kept), person), True
            )
            ids = self._rows("SELECT id FROM faces WHERE generation = ? ORDER BY id", (generation,))
        if not kept:
            return [None] * count
        self._changed(len(kept))
        stored = dict(zip(kept, (int(row[0]) for row in ids), strict=True))
        return [stored.get(k) for k in range(count)]

    def _checked(self, embeddings) -> np.ndarray:
        """Embeddings as a little-endian float32 N x D array, or InputError."""
        matrix = np.asarray(
            embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings
        )
        if matrix.ndim != 2 or matrix.shape[1] != self.embedding_dim or len(matrix) == 0:
            raise InputError(
                f"embeddings must be N x {self.embedding_dim} with N >= 1 for {self.encoder_name}, "
                f"got shape {matrix.shape}"
            )
        if not np.isfinite(matrix).all():
            raise InputError(
                "embeddings contain NaN or infinite values: the encoder output is broken"
            )
        return np.ascontiguousarray(matrix, dtype="<f4")

    def remove(self, name: str) -> int:
        """Delete ``name`` and all their faces in one transaction; the number of faces removed."""
        with self._transaction(write=True):
            generation = self._bump()
            person = self._value("SELECT id FROM persons WHERE name = ?", (name,))
            if person is None:
                raise InputError(
                    f"{name!r} is not enrolled in {self.location}: see who is with tripletface "
                    "people"
                )
            self._run(
                "INSERT INTO removed (face_id, added, generation)"
                " SELECT id, generation, ? FROM faces WHERE person_id = ?",
                (generation, person),
                True,
            )
            removed = self._run("DELETE FROM faces WHERE person_id = ?", (person,), True).rowcount
            self._run("DELETE FROM persons WHERE id = ?", (person,), True)
        self._changed(removed)
        return removed

    # ---- reading

    def people(self) -> list[tuple[str, int]]:
        """(name, number of enrolled faces) of every person, sorted by name."""
        return [
            (name, int(n))
            for name, n in self._rows("SELECT name, faces FROM persons ORDER BY name")
        ]

    def _kept(
        self,
        name: str,
        sources: Sequence[str | None],
        hashes: Sequence[str | None],
        skip_enrolled: bool,
    ) -> list[int]:
        """Positions of the faces ``add_faces`` stores (all of them unless ``skip_enrolled``);
        PhotoTakenError naming the first file whose content hash someone other than ``name`` is
        enrolled from. Asked once for the whole batch, inside the caller's write transaction."""
        owners = self._owners(hashes)
        seen: set[str | None] = set()
        kept = []
        for k, (source, digest) in enumerate(zip(sources, hashes, strict=True)):
            owned_by = owners.get(digest, set())
            if owned_by and name not in owned_by:
                raise PhotoTakenError(
                    f"{source or 'photo'}: this photo is already enrolled as {min(owned_by)!r}, so "
                    f"it cannot also be {name!r}: use another photo of {name!r}"
                )
            if skip_enrolled and digest is not None and (name in owned_by or digest in seen):
                continue
            seen.add(digest)
            kept.append(k)
        return kept

    def _owners(self, hashes: Iterable[str | None]) -> dict[str, set[str]]:
        """The persons enrolled from each of these content hashes that anyone is (several only
        in a gallery filled before the rule of one person per photo), IN_CHUNK to a query."""
        owners: dict[str, set[str]] = {}
        for digest, owner in self._rows_in(
            "SELECT DISTINCT faces.sha256, persons.name FROM faces JOIN persons"
            " ON persons.id = faces.person_id WHERE faces.sha256 IN ({values})",
            sorted({digest for digest in hashes if digest is not None}),
        ):
            owners.setdefault(digest, set()).add(owner)
        return owners

    def hash_owner(self, sha256: str) -> str | None:
        """The person enrolled from a file with this content hash (the first by name if several
        are), None if no one is."""
        owners = self._owners([sha256]).get(sha256)
        return min(owners) if owners else None

    def counts(self) -> Counts:
        """Number of persons and of their faces, counted by the database (one query): what
        ``people()`` would add up, without reading every person's row."""
        people, faces = self._rows("SELECT COUNT(*), COALESCE(SUM(faces), 0) FROM persons")[0]
        return Counts(int(people), int(faces))

    def face_count(self) -> int:
        """Number of enrolled faces."""
        return int(self._value("SELECT COUNT(*) FROM faces"))

    def is_empty(self) -> bool:
        """No face enrolled? (One row looked at, where face_count counts them all.)"""
        return not self._rows("SELECT 1 FROM faces LIMIT 1")

    def faces_of(self, name: str) -> np.ndarray:
        """The N x D embeddings of one person (N = 0 if not enrolled), by face id."""
        rows = self._rows(
            "SELECT faces.embedding FROM faces JOIN persons ON persons.id = faces.person_id"
            " WHERE persons.name = ? ORDER BY faces.id",
            (name,),
        )
        return self._matrix([row[0] for row in rows])

    def embeddings_of(self, ids, missing_ok: bool = False) -> np.ndarray:
        """The embeddings of these face ids, in their order; a face not here is an InputError,
        or a row of NaN if ``missing_ok``."""
        ids = [int(i) for i in np.asarray(ids).ravel()]
        found = dict(self._rows_in("SELECT id, embedding FROM faces WHERE id IN ({values})", ids))
        missing = [i for i in ids if i not in found]
        if missing and not missing_ok:
            raise InputError(f"faces {missing[:5]} are not in {self.location}")
        nothing = np.full(self.embedding_dim, np.nan, dtype="<f4").tobytes()
        return self._matrix([found.get(i, nothing) for i in ids])

    def records_of(self, name: str) -> tuple[np.ndarray, list[str | None], list[str | None], list]:
        """(N x D embeddings, sources, content hashes, boxes or None) of one person's faces."""
        rows = self._rows(
            "SELECT faces.embedding, source, sha256, box_left, box_top, box_right, box_bottom"
            " FROM faces JOIN persons ON persons.id = faces.person_id WHERE persons.name = ?"
            " ORDER BY faces.id",
            (name,),
        )
        boxes = [None if row[3] is None else tuple(row[3:7]) for row in rows]
        return (
            self._matrix([row[0] for row in rows]),
            [r[1] for r in rows],
            [r[2] for r in rows],
            boxes,
        )

    def names_of(self, face_ids) -> dict[int, str]:
        """Person name of each of these face ids that is enrolled."""
        return dict(
            self._rows_in(
                "SELECT faces.id, persons.name FROM faces JOIN persons"
                " ON persons.id = faces.person_id WHERE faces.id IN ({values})",
                sorted({int(i) for i in np.asarray(face_ids).ravel()}),
            )
        )

    def _person_names(self, person_ids: np.ndarray) -> dict[int, str]:
        ids = [int(i) for i in person_ids]
        return dict(self._rows_in("SELECT id, name FROM persons WHERE id IN ({values})", ids))

    def _rows_in(self, sql: str, values: Sequence) -> list[tuple]:
        """Rows of ``sql`` whose ``{values}`` is filled with these values, IN_CHUNK to a query."""
        rows = []
        for start in range(0, len(values), IN_CHUNK):
            part = tuple(values[start : start + IN_CHUNK])
            rows += self._rows(sql.format(values=",".join("?" * len(part))), part)
        return rows

    def _matrix(self, blobs: list[bytes]) -> np.ndarray:
        """N stored embeddings as an N x D float32 array; GalleryError if one has the wrong size."""
        width = 4 * self.embedding_dim
        joined = b"".join(blobs)
        if len(joined) != width * len(blobs) or any(len(blob) != width for blob in blobs):
            raise GalleryError(
                f"{self.location} holds embeddings of the wrong size (damaged): "
                "use another --gallery, or restore it from a backup"
            )
        return np.frombuffer(joined, dtype="<f4").astype(np.float32).reshape(-1, self.embedding_dim)

    def _faces_where(
        self, condition: str, params: tuple, by_generation: bool = False
    ) -> tuple[np.ndarray, ...]:
        """(ids, person ids, N x D) of the faces matching ``condition``, by ascending id, read in
        chunks by id, or with ``by_generation`` by (generation, id): a condition on the
        generation then walks its index, not every face in the table."""
        count = int(self._value(f"SELECT COUNT(*) FROM faces WHERE {condition}", params))
        ids = np.empty(count, dtype=np.int64)
        persons = np.empty(count, dtype=np.int64)
        matrix = np.empty((count, self.embedding_dim), dtype=np.float32)
        key = "generation, id" if by_generation else "id"
        after = "(generation, id) > (?, ?)" if by_generation else "id > ?"
        done, last = 0, (-1, -1) if by_generation else (-1,)
        while done < count:
            rows = self._rows(
                f"SELECT id, person_id, embedding, generation FROM faces WHERE {condition}"
                f" AND {after} ORDER BY {key} LIMIT {_CHUNK}",
                (*params, *last),
            )
            if not rows or done + len(rows) > count:
                break
            part = slice(done, done + len(rows))
            ids[part] = [row[0] for row in rows]
            persons[part] = [row[1] for row in rows]
            matrix[part] = self._matrix([row[2] for row in rows])
            done = done + len(rows)
            last = (rows[-1][3], rows[-1][0]) if by_generation else (rows[-1][0],)
        if done != count:
            raise GalleryError(f"{self.location} changed its faces inside a read transaction")
        if not by_generation:
            return ids, persons, matrix
        order = np.argsort(ids)
        return ids[order], persons[order], matrix[order]

    def snapshot(self) -> Snapshot:
        """All enrolled faces by ascending id; cached until the gallery's generation moves.

        The arrays are shared with later callers: treat them as read-only.
        """
        if self._snapshot is not None and self._snapshot.generation == self.generation:
            return self._snapshot
        # One read transaction, so that the counter and the rows describe the same state.
        with self._transaction(write=False):
            generation = self.generation
            ids, persons, matrix = self._faces_where("1 = 1", ())
        self._snapshot = Snapshot(generation, ids, matrix, Names(persons, self._person_names))
        return self._snapshot

    def embeddings(self) -> tuple[np.ndarray, Names]:
        """(N x D float32 embeddings, the N person names), by face id; cached between writes."""
        snapshot = self.snapshot()
        return snapshot.matrix, snapshot.names

    def changes(self, since: int) -> Changes:
        """Faces added and removed after generation ``since``, read in one transaction."""
        with self._transaction(write=False):
            generation = self.generation
            ids, _, matrix = self._faces_where("generation > ?", (since,), by_generation=True)
            removed = self._rows(
                "SELECT face_id, added FROM removed WHERE generation > ? ORDER BY face_id",
                (since,),
            )
            faces = self.face_count()
        removed = np.array(removed, dtype=np.int64).reshape(-1, 2)
        return Changes(generation, ids, matrix, removed[:, 0], removed[:, 1], faces)
