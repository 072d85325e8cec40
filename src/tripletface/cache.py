"""Files tripletface keeps for the user between runs: exported encoders, dlib's HOG detector.

They live in ``$XDG_DATA_HOME/tripletface`` (default ``~/.local/share/tripletface``), each written
atomically, so that processes running at the same time see a whole file or none; anything here
can be deleted and is made again when needed.
"""

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO


def data_dir() -> Path:
    """tripletface's folder in the XDG data folder (~/.local/share/tripletface by default)."""
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "tripletface"


def create_temporary_beside(path: Path) -> tuple[int, Path]:
    """A new empty file in ``path``'s folder, open for writing, with the mode the umask gives."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            # Not tempfile.mkstemp: its fixed 0600 survives os.replace, so other users could not
            # read the result; 0o666 here lets the kernel apply the umask as for any new file.
            # O_BINARY (Windows only) stops newline translation corrupting binary content.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def write_atomic(
    path: str | Path, write: Callable[[IO], object], mode: str = "wb", sync: bool = True
) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, then move it into place.

    Readers see the old file or the new one, never half of one; a failed write leaves no trace.
    ``sync`` also flushes the file to the disk first, so that a power cut cannot leave it empty
    (worth its milliseconds for a model, not for each of ten thousand regenerable pictures).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary_beside(path)
    try:
        with os.fdopen(fd, mode) as stream:
            write(stream)
            if sync:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``write_atomic``)."""
    return write_atomic(path, lambda stream: stream.write(data))
