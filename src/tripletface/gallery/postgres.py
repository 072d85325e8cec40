"""A gallery in PostgreSQL (psycopg 3), shared by several processes and machines.

Same schema and guarantees as the SQLite file: one transaction per change, the generation moved
first (its row lock orders writers, so face ids grow in commit order and readers catch up by
``changes``). A server that cannot be reached raises GalleryUnavailable; the next call after it
is back reconnects by itself.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tripletface.errors import GalleryError, GalleryUnavailable, InputError
from tripletface.gallery.base import SCHEMA, SCHEMA_VERSION, BaseGallery, new_uid, now

_DDL = SCHEMA.format(id="BIGSERIAL PRIMARY KEY", blob="BYTEA")

# Any constant: the advisory lock that lets one of several processes create the tables.
_CREATE_LOCK = 0x7472_6970_6C65


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise InputError(
            "a PostgreSQL gallery needs psycopg: pip install 'tripletface[postgres]'"
        ) from None
    return psycopg


def without_password(url: str) -> str:
    """The URL as messages show it: any password (``user:PASSWORD@`` or a ``password=``
    parameter, both of which libpq takes) replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class PostgresGallery(BaseGallery):
    """Persons and their enrolled embeddings from one encoder, in a PostgreSQL database."""

    _placeholder = "%s"
    _begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(
        self,
        url: str,
        encoder_name: str | None,
        encoder_version: str | None,
        embedding_dim: int | None,
        create: bool = True,
        read_only: bool = False,
    ):
        super().__init__(encoder_name, embedding_dim)
        psycopg = _psycopg()
        self._errors = (psycopg.Error,)
        self._unreachable = psycopg.OperationalError
        self.url = url
        self.path = self.location = without_password(url)
        self.writable = not read_only
        self._depth = 0
        self._conn = self._connect()
        try:
            if not self._rows("SELECT to_regclass('meta') IS NOT NULL")[0][0]:
                if read_only or not create or encoder_name is None:
                    raise GalleryError(
                        f"{self.location}: no gallery in this database; check --gallery, or "
                        "enroll someone first (tripletface enroll NAME PHOTO)"
                    )
                self._create(encoder_version)
            self._check(encoder_version)
        except BaseException:
            self._conn.close()
            raise
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        self.index_path = Path(cache) / "tripletface" / f"{self.uid}.faiss"

    def _connect(self):
        try:
            return _psycopg().connect(self.url, autocommit=True, connect_timeout=5)
        except self._errors as error:
            raise self._error(error, False) from None

    def _conn_now(self):
        # Reconnect only between transactions: a statement never moves to a new connection.
        if self._conn.closed and self._depth == 0:
            self._conn = self._connect()
        return self._conn

    def _transaction(self, write: bool):
        return _Depth(self, super()._transaction(write))

    def _run(self, sql: str, params: tuple = (), writing: bool = False):
        opened = not self._conn.closed
        try:
            return super()._run(sql, params, writing)
        except GalleryUnavailable:
            # A connection the server dropped (a restart) is found broken only when used. When
            # nothing of the work ran on it yet (a read outside a transaction, or the BEGIN of
            # one), a new connection takes it over, so that a database that is back costs no
            # request; a connection already broken before is not tried twice.
            first = self._depth == 0 or sql in (self._begin_read, self._begin_write)
            if not (opened and self._conn.closed and first):
                raise
            self._conn = self._connect()
            return super()._run(sql, params, writing)

    def _create(self, encoder_version: str) -> None:
        """Create the tables once, even if several processes try at the same time."""
        with self._transaction(write=True):
            self._run("SELECT pg_advisory_xact_lock(?)", (_CREATE_LOCK,), True)
            if not self._rows("SELECT to_regclass('meta') IS NOT NULL")[0][0]:
                self._run(_DDL, writing=True)
                self._run(f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION})", writing=True)
                self._run(
                    "INSERT INTO meta VALUES (1, ?, ?, ?, NULL, NULL, 0, ?, ?)",
                    (self.encoder_name, encoder_version, self.embedding_dim, new_uid(), now()),
                    True,
                )

    def _error(self, error: BaseException, writing: bool) -> GalleryError:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, self._unreachable):
            return GalleryUnavailable(
                f"{self.location}: the database cannot be reached ({first}); "
                "start it or check --gallery, then try again"
            )
        if writing:
            return GalleryError(f"{self.location}: the change was not saved ({first})")
        return GalleryError(f"{self.location}: the gallery cannot be read ({first})")


class _Depth:
    """A transaction context that counts how many are open, so that none reconnects inside."""

    def __init__(self, gallery: PostgresGallery, inner):
        self.gallery, self.inner = gallery, inner

    def __enter__(self):
        self.gallery._conn_now()
        self.gallery._depth += 1
        try:
            return self.inner.__enter__()
        except BaseException:
            self.gallery._depth -= 1
            raise

    def __exit__(self, *exc):
        try:
            return self.inner.__exit__(*exc)
        finally:
            self.gallery._depth -= 1
