"""A persistent gallery of enrolled faces: one SQLite file (WAL), every write one transaction.

Tables: ``persons`` (name), ``faces`` (a person's float32 embedding, source file, content
SHA-256, face box), ``meta`` (the encoder that made the embeddings, the calibrated threshold and
confidence model, a change counter) and ``schema_version``. The ``calibration`` column (JSON) is
added to older files the first time they are calibrated. A process killed in the middle of a
write leaves the file as it was before that write (SQLite's atomic commit); ``generation`` in
``meta`` counts committed changes, so callers holding embeddings or a search index can tell when
it is stale.
"""

import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import numpy as np

from tripletface.errors import GalleryError, InputError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    encoder_name TEXT NOT NULL,
    encoder_version TEXT NOT NULL,
    embedding_dim INTEGER NOT NULL,
    threshold REAL,
    generation INTEGER NOT NULL,
    uid TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE persons (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
-- AUTOINCREMENT: face ids are never reused, so a new face always sorts after every older one.
CREATE TABLE faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
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
"""

Box = tuple[int, int, int, int]


class Snapshot(NamedTuple):
    """The enrolled faces at one generation: face ids (N, ascending), N x D float32, N names."""

    generation: int
    ids: np.ndarray
    matrix: np.ndarray
    names: tuple[str, ...]


def default_gallery_path() -> Path:
    """$TRIPLETFACE_GALLERY, else gallery.db in the XDG data folder (~/.local/share/tripletface)."""
    if os.environ.get("TRIPLETFACE_GALLERY"):
        return Path(os.environ["TRIPLETFACE_GALLERY"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "tripletface" / "gallery.db"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _writable(path: Path) -> bool:
    """Can this process change the file and create SQLite's -wal and -shm files next to it?"""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    """Autocommit connection (transactions are explicit) with foreign keys enforced."""
    uri = f"file:{quote(str(path.resolve()))}?mode={mode}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _publish(tmp: Path, path: Path) -> None:
    """Give the finished file ``tmp`` the name ``path``, unless another process got there first."""
    try:
        # A hard link never replaces: two processes creating one gallery keep the first one's.
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:
        os.replace(tmp, path)


class Gallery:
    """Persons and their enrolled embeddings from one encoder, in a SQLite file."""

    def __init__(
        self,
        path: str | Path,
        encoder_name: str,
        encoder_version: str,
        embedding_dim: int,
        create: bool = True,
        read_only: bool = False,
    ):
        self.path = Path(path)
        self.encoder_name = encoder_name
        self.embedding_dim = int(embedding_dim)
        if self.path.is_dir():
            raise GalleryError(
                f"{self.path} is a folder: give --gallery a file name such as gallery.db"
            )
        if not self.path.exists():
            if read_only or not create:
                raise GalleryError(
                    f"{self.path}: no gallery there; check --gallery, or enroll someone first "
                    "(tripletface enroll NAME PHOTO)"
                )
            self._create(encoder_name, encoder_version)
        self.writable = not read_only and _writable(self.path)
        self._why_not = (
            "it was opened read-only" if read_only else "the file or its folder is read-only"
        )
        try:
            self._conn = _connect(self.path, "rw" if self.writable else "ro")
        except sqlite3.Error as error:
            raise self._damaged(error) from None
        self._snapshot: Snapshot | None = None
        try:
            self._check(encoder_name, encoder_version)
        except BaseException:
            self._conn.close()
            raise

    def _create(self, encoder_name: str, encoder_version: str) -> None:
        """Write a new empty gallery to a temporary file, then move it into place atomically."""
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(self.path.parent, os.W_OK):
                raise OSError(f"folder {self.path.parent} is read-only")
            conn = _connect(tmp, "rwc")
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(
                    "BEGIN;" + _SCHEMA + f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION});"
                )
                conn.execute(
                    "INSERT INTO meta VALUES (1, ?, ?, ?, NULL, 0, ?, ?)",
                    (
                        encoder_name,
                        encoder_version,
                        self.embedding_dim,
                        secrets.token_hex(8),
                        _now(),
                    ),
                )
                conn.execute("COMMIT")
            finally:
                conn.close()
            _publish(tmp, self.path)
        except (OSError, sqlite3.Error) as error:
            raise GalleryError(
                f"{self.path}: cannot create the gallery ({error}); "
                "choose a writable place with --gallery"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _check(self, encoder_name: str, encoder_version: str) -> None:
        """Refuse a file that is not a gallery of this schema, or one made by another encoder."""
        try:
            version = self._conn.execute("SELECT version FROM schema_version").fetchone()
            stored = self._conn.execute(
                "SELECT encoder_name, encoder_version, embedding_dim FROM meta"
            ).fetchone()
            if self.writable:
                self._conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as error:
            raise self._damaged(error) from None
        if version is None or version[0] != SCHEMA_VERSION or stored is None:
            found = "no version" if version is None else f"version {version[0]}"
            raise GalleryError(
                f"{self.path} has gallery schema {found}, this tripletface reads version "
                f"{SCHEMA_VERSION}: use another --gallery, or the tripletface that made it"
            )
        name, fingerprint, dim = stored
        if name != encoder_name or dim != self.embedding_dim:
            raise GalleryError(
                f"{self.path} was built with encoder {name} ({dim}-d), not {encoder_name} "
                f"({self.embedding_dim}-d), and distances between them mean nothing: use "
                f"--encoder {name} with this gallery, or another --gallery for {encoder_name}"
            )
        if fingerprint != encoder_version:
            raise GalleryError(
                f"{self.path} was built with other weights of encoder {name} (version "
                f"{fingerprint[:12]}, now {encoder_version[:12]}): use the encoder that built it, "
                "or enroll again into another --gallery"
            )

    def _damaged(self, error: sqlite3.Error) -> GalleryError:
        return GalleryError(
            f"{self.path} is not a tripletface gallery or is damaged ({error}); "
            "use another --gallery, or restore the file from a backup"
        )

    def close(self) -> None:
        """Close the database connection; the gallery cannot be used afterwards."""
        self._conn.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _write(self, change: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside is committed together or not at all."""
        if not self.writable:
            raise GalleryError(
                f"{self.path} cannot be changed: {self._why_not}; make it writable "
                "or use another --gallery"
            )
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise self._write_error(error) from None
        try:
            yield self._conn
            if change:
                self._conn.execute("UPDATE meta SET generation = generation + 1")
            self._conn.execute("COMMIT")
        except BaseException as error:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if isinstance(error, sqlite3.Error):
                raise self._write_error(error) from None
            raise

    def _write_error(self, error: sqlite3.Error) -> GalleryError:
        if "readonly" in str(error):
            return GalleryError(
                f"{self.path} cannot be changed: the file or its folder is read-only; make it "
                "writable or use another --gallery"
            )
        return GalleryError(f"{self.path}: the change was not saved ({error}); nothing was written")

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one query; a damaged file is reported as a GalleryError."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as error:
            raise self._damaged(error) from None

    @property
    def generation(self) -> int:
        """Number of committed changes to the faces: moves whenever embeddings() would."""
        return int(self._read("SELECT generation FROM meta")[0][0])

    @property
    def uid(self) -> str:
        """A random identifier given to this gallery when it was created."""
        return self._read("SELECT uid FROM meta")[0][0]

    @property
    def threshold(self) -> float | None:
        """The calibrated distance threshold stored in the gallery, or None."""
        value = self._read("SELECT threshold FROM meta")[0][0]
        return None if value is None else float(value)

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise InputError(f"threshold must be a finite distance >= 0, got {value}")
        with self._write(change=False) as conn:
            conn.execute(
                "UPDATE meta SET threshold = ?", (None if value is None else float(value),)
            )

    @property
    def calibration(self) -> dict | None:
        """The confidence model fitted on this gallery's calibration photos, or None."""
        if not self._has_calibration_column():
            return None
        value = self._read("SELECT calibration FROM meta")[0][0]
        if value is None:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise self._damaged(sqlite3.DatabaseError(f"calibration: {error}")) from None

    @calibration.setter
    def calibration(self, value: dict | None) -> None:
        if value is not None and not isinstance(value, dict):
            raise InputError(f"calibration must be a dict or None, got {type(value).__name__}")
        text = None if value is None else json.dumps(value, sort_keys=True)
        with self._write(change=False) as conn:
            if not self._has_calibration_column():
                conn.execute("ALTER TABLE meta ADD COLUMN calibration TEXT")
            conn.execute("UPDATE meta SET calibration = ?", (text,))

    def _has_calibration_column(self) -> bool:
        """Whether ``meta`` has the calibration column (galleries before it lack it)."""
        return any(row[1] == "calibration" for row in self._read("PRAGMA table_info(meta)"))

    def add_faces(
        self,
        name: str,
        embeddings,
        sources: Sequence[str | None] | None = None,
        hashes: Sequence[str | None] | None = None,
        boxes: Sequence[Box | None] | None = None,
    ) -> list[int]:
        """Store N x D embeddings as faces of ``name`` (created if new), all or none; their ids."""
        matrix = self._checked(embeddings)
        count = len(matrix)
        sources, hashes, boxes = (
            [None] * count if column is None else list(column)
            for column in (sources, hashes, boxes)
        )
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"person name must be a non-empty string, got {name!r}")
        if not len(sources) == len(hashes) == len(boxes) == count:
            raise InputError(
                f"add_faces got {count} embeddings but {len(sources)} sources, "
                f"{len(hashes)} hashes and {len(boxes)} boxes: give one of each per embedding"
            )
        now = _now()
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO persons (name, created) VALUES (?, ?)", (name, now))
            person = conn.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()[0]
            ids = []
            for row, source, digest, box in zip(matrix, sources, hashes, boxes, strict=True):
                left, top, right, bottom = (None,) * 4 if box is None else (int(v) for v in box)
                cursor = conn.execute(
                    "INSERT INTO faces (person_id, embedding, source, sha256, box_left, box_top,"
                    " box_right, box_bottom, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (person, row.tobytes(), source, digest, left, top, right, bottom, now),
                )
                ids.append(cursor.lastrowid)
        return ids

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
        with self._write() as conn:
            person = conn.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()
            if person is None:
                raise InputError(
                    f"{name!r} is not enrolled in {self.path}: see who is with tripletface people"
                )
            removed = conn.execute("DELETE FROM faces WHERE person_id = ?", person).rowcount
            conn.execute("DELETE FROM persons WHERE id = ?", person)
        return removed

    def people(self) -> list[tuple[str, int]]:
        """(name, number of enrolled faces) of every person, sorted by name."""
        return self._read(
            "SELECT persons.name, COUNT(faces.id) FROM persons LEFT JOIN faces"
            " ON faces.person_id = persons.id GROUP BY persons.id ORDER BY persons.name"
        )

    def has_hash(self, sha256: str) -> bool:
        """Is a face from a file with this content hash already enrolled?"""
        return bool(self._read("SELECT 1 FROM faces WHERE sha256 = ? LIMIT 1", (sha256,)))

    def snapshot(self) -> Snapshot:
        """All enrolled faces by ascending id; cached until the gallery's generation moves.

        The arrays are shared with later callers: treat them as read-only.
        """
        generation = self.generation
        if self._snapshot is not None and self._snapshot.generation == generation:
            return self._snapshot
        # One read transaction, so that the counter and the rows describe the same state.
        self._conn.execute("BEGIN")
        try:
            generation = self.generation
            rows = self._read(
                "SELECT faces.id, persons.name, faces.embedding FROM faces"
                " JOIN persons ON persons.id = faces.person_id ORDER BY faces.id"
            )
        finally:
            self._conn.execute("COMMIT")
        width = 4 * self.embedding_dim
        if any(len(row[2]) != width for row in rows):
            raise GalleryError(
                f"{self.path} holds embeddings of the wrong size (damaged file): "
                "use another --gallery, or restore the file from a backup"
            )
        matrix = np.frombuffer(b"".join(row[2] for row in rows), dtype="<f4")
        self._snapshot = Snapshot(
            generation,
            np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)),
            matrix.astype(np.float32).reshape(len(rows), self.embedding_dim),
            tuple(row[1] for row in rows),
        )
        return self._snapshot

    def embeddings(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """(N x D float32 embeddings, the N person names), by face id; cached between writes."""
        snapshot = self.snapshot()
        return snapshot.matrix, snapshot.names
