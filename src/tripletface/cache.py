"""Files tripletface keeps for the user between runs: exported encoders, dlib's HOG detector.

They live in ``$XDG_DATA_HOME/tripletface`` (default ``~/.local/share/tripletface``), each written
atomically, so that processes running at the same time see a whole file or none; anything here
can be deleted and is made again when needed.

Every atomic writer of the package names its temporary with ``temporary_path`` and moves it
into place with ``move_into_place``, which then calls ``remove_stale_temporaries``: the
temporaries a writer killed with ``kill -9`` left beside the same file go at its next
successful write that sweeps: every write in a folder of under 2,000 files, at least one in
n // 1000 + 1 of a process in a folder of n.
"""

import os
import re
import secrets
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO

# What temporary_path puts between ".NAME." and ".tmp": the writer's PID and a random token.
_TEMPORARY_MIDDLE = re.compile(r"([1-9][0-9]*)-[0-9a-f]{16}")


def data_dir() -> Path:
    """tripletface's folder in the XDG data folder (~/.local/share/tripletface by default)."""
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "tripletface"


def temporary_path(path: Path) -> Path:
    """A fresh hidden name beside ``path``, ``.NAME.<pid>-<16 hex>.tmp``, for a temporary of it."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(8)}.tmp")


def _running(pid: int) -> bool:
    """Is there a process ``pid`` (True when that cannot be told, so that its file is kept)?"""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # on Windows os.kill(pid, 0) would terminate the process, not probe it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: alive, under another user
        return True
    return True


def remove_stale_temporaries(path: Path, companions: tuple[str, ...] = ()) -> int:
    """Delete the temporaries of ``path`` (``temporary_path`` names) whose PID no longer runs,
    and beside each the files named it plus a suffix of ``companions``; returns how many files
    the folder holds (0 when it cannot be listed); never raises."""
    prefix = f".{path.name}."
    found: list[str] = []
    entries = 0
    # Housekeeping only: a folder that cannot be listed or a file that cannot go is left as is.
    with suppress(OSError), os.scandir(path.parent) as listing:
        for entry in listing:
            entries += 1
            if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                found.append(entry.name)
    for name in found:
        middle = _TEMPORARY_MIDDLE.fullmatch(name[len(prefix) : -len(".tmp")])
        if middle is None or _running(int(middle[1])):
            continue
        # The companions first: should this stop half-way, the temporary still leads to them.
        for doomed in (*(name + suffix for suffix in companions), name):
            with suppress(OSError):
                path.with_name(doomed).unlink()
    return entries


# The sweep lists the whole folder, which in a folder of 20,000 snapshots costs a hundred times
# the write (bench/atomic_write.py): after listing n files, move_into_place lets the next
# n // _SWEEP_SPACING writes of this process there go unswept, so that a write costs about a
# listing of _SWEEP_SPACING files at most, and a smaller folder is still swept at every write.
_SWEEP_SPACING = 1000
_UNSWEPT_WRITES: dict[str, int] = {}


def move_into_place(tmp: str | Path, path: Path) -> None:
    """``os.replace(tmp, path)``, then ``remove_stale_temporaries(path)`` unless a sweep of
    this large folder came a few writes ago: how every atomic writer finishes."""
    os.replace(tmp, path)
    folder = os.path.abspath(path.parent)
    left = _UNSWEPT_WRITES.get(folder, 0)
    if left > 0:
        _UNSWEPT_WRITES[folder] = left - 1
    else:
        _UNSWEPT_WRITES[folder] = remove_stale_temporaries(path) // _SWEEP_SPACING


def create_temporary_beside(path: Path) -> tuple[int, Path]:
    """A new empty file in ``path``'s folder, open for writing, with the mode the umask gives."""
    while True:
        tmp = temporary_path(path)
        try:
            # Not tempfile.mkstemp: its fixed 0600 survives os.replace, so other users could not
            # read the result; 0o666 here lets the kernel apply the umask as for any new file.
            # O_BINARY (Windows only) stops newline translation corrupting binary content.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def write_atomic(
    path: str | Path,
    write: Callable[[IO], object],
    mode: str = "wb",
    sync: bool = True,
    replace: bool = True,
) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, then move it into place;
    returns the path written.

    Readers see the old file or the new one, never half of one; a failed write leaves no trace,
    a killed one (``kill -9``) its temporary until a later write of ``path`` removes it
    (``move_into_place``).
    ``sync`` also flushes the file to the disk first, so that a power cut cannot leave it empty
    (worth its milliseconds for a model, not for each of ten thousand regenerable pictures).
    ``replace=False`` never replaces a file: the content goes to the first of ``path``,
    ``STEM-2.SUFFIX``, ``STEM-3.SUFFIX``... that is free (readers may see it empty a moment).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary_beside(path)
    reserved = None
    try:
        with os.fdopen(fd, mode) as stream:
            write(stream)
            if sync:
                stream.flush()
                os.fsync(stream.fileno())
        if not replace:
            path = reserved = _reserve(path)
        move_into_place(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if reserved is not None:
            reserved.unlink(missing_ok=True)  # still the empty file made to hold the name
        raise
    return path


def _reserve(path: Path) -> Path:
    """The first of ``path``, ``STEM-2.SUFFIX``, ``STEM-3.SUFFIX``... that does not exist,
    created empty now, so that no other writer can take that name too."""
    name, number = path, 1
    while True:
        try:
            # O_EXCL: creating the name fails, atomically, if any file (or link) holds it.
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:
            number += 1
            name = path.with_name(f"{path.stem}-{number}{path.suffix}")


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``write_atomic``)."""
    return write_atomic(path, lambda stream: stream.write(data))
