"""Files tripletface keeps for the user between runs: exported encoders, dlib's HOG detector.

They live in ``$XDG_DATA_HOME/tripletface`` (default ``~/.local/share/tripletface``), each written
atomically, so that processes running at the same time see a whole file or none; anything here
can be deleted and is made again when needed.
"""

import os
import tempfile
from pathlib import Path


def data_dir() -> Path:
    """tripletface's folder in the XDG data folder (~/.local/share/tripletface by default)."""
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "tripletface"


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
