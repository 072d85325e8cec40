"""The embedded gallery: one SQLite file in WAL mode, every write one transaction.

A process killed in the middle of a write leaves the file as it was before that write (SQLite's
atomic commit). A new gallery is written to a temporary file and moved into place.
"""

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from tripletface.cache import remove_stale_temporaries, temporary_path
from tripletface.errors import GalleryError
from tripletface.gallery.base import SCHEMA, SCHEMA_VERSION, BaseGallery, new_uid, now

_DDL = SCHEMA.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB")

# The files SQLite keeps beside a database while it is open (WAL mode) or in a transaction.
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")

# Version 1 had no change log, no face counts and no calibration: its faces count as added at
# generation 0, which makes any saved index of it stale.
_UPGRADE_FROM_1 = (
    "ALTER TABLE meta ADD COLUMN calibration TEXT",
    "ALTER TABLE persons ADD COLUMN faces BIGINT NOT NULL DEFAULT 0",
    "UPDATE persons SET faces = (SELECT COUNT(*) FROM faces WHERE person_id = persons.id)",
    "ALTER TABLE faces ADD COLUMN generation BIGINT NOT NULL DEFAULT 0",
    "CREATE INDEX faces_generation ON faces(generation)",
    "CREATE TABLE removed (face_id BIGINT PRIMARY KEY, added BIGINT NOT NULL,"
    " generation BIGINT NOT NULL)",
    "CREATE INDEX removed_generation ON removed(generation)",
    "UPDATE meta SET generation = generation + 1",
    "UPDATE schema_version SET version = 2",
)


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


class SQLiteGallery(BaseGallery):
    """Persons and their enrolled embeddings from one encoder, in a SQLite file."""

    _begin_write = "BEGIN IMMEDIATE"
    _errors = (sqlite3.Error,)

    def __init__(
        self,
        path: str | Path,
        encoder_name: str | None,
        encoder_version: str | None,
        embedding_dim: int | None,
        create: bool = True,
        read_only: bool = False,
    ):
        super().__init__(encoder_name, embedding_dim)
        self.path = Path(path)
        self.location = str(self.path)
        self.index_path = self.path.with_name(self.path.name + ".faiss")
        if self.path.is_dir():
            raise GalleryError(
                f"{self.path} is a folder: give --gallery a file name such as gallery.db"
            )
        if not self.path.exists():
            if read_only or not create or encoder_name is None:
                raise GalleryError(
                    f"{self.path}: no gallery there; check --gallery, or enroll someone first "
                    "(tripletface enroll NAME PHOTO)"
                )
            self._create(encoder_name, encoder_version)
        self.writable = not read_only and _writable(self.path)
        if not read_only:
            self._why_not = "the file or its folder is read-only"
        try:
            self._conn = _connect(self.path, "rw" if self.writable else "ro")
        except sqlite3.Error as error:
            raise self._error(error, False) from None
        try:
            if self.writable and self._value("SELECT version FROM schema_version") == 1:
                self._upgrade()
            self._check(encoder_version)
            if self.writable:
                self._run("PRAGMA journal_mode = WAL")
        except BaseException:
            self._conn.close()
            raise

    def _create(self, encoder_name: str, encoder_version: str) -> None:
        """Write a new empty gallery to a temporary file, then move it into place atomically."""
        tmp = temporary_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(self.path.parent, os.W_OK):
                raise OSError(f"folder {self.path.parent} is read-only")
            conn = _connect(tmp, "rwc")
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(
                    "BEGIN;" + _DDL + f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION});"
                )
                conn.execute(
                    "INSERT INTO meta VALUES (1, ?, ?, ?, NULL, NULL, 0, ?, ?)",
                    (encoder_name, encoder_version, self.embedding_dim, new_uid(), now()),
                )
                conn.execute("COMMIT")
            finally:
                conn.close()
            _publish(tmp, self.path)
            # A creator killed mid-way may also have left SQLite's -wal and -shm of its temporary.
            remove_stale_temporaries(self.path, _SQLITE_COMPANIONS)
        except (OSError, sqlite3.Error) as error:
            raise GalleryError(
                f"{self.path}: cannot create the gallery ({error}); "
                "choose a writable place with --gallery"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _upgrade(self) -> None:
        """Bring a version 1 gallery (before the change log) to version 2, in one transaction."""
        with self._transaction(write=True):
            for statement in _UPGRADE_FROM_1:
                self._run(statement, writing=True)

    def _error(self, error: BaseException, writing: bool) -> GalleryError:
        if writing and "readonly" in str(error):
            return GalleryError(
                f"{self.path} cannot be changed: the file or its folder is read-only; make it "
                "writable or use another --gallery"
            )
        if writing:
            return GalleryError(
                f"{self.path}: the change was not saved ({error}); nothing was written"
            )
        return GalleryError(
            f"{self.path} is not a tripletface gallery or is damaged ({error}); "
            "use another --gallery, or restore the file from a backup"
        )
