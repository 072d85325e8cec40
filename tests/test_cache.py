"""Files written atomically for the user: whole or absent, and readable like any file they make."""

import os
import stat
from collections.abc import Iterator

import pytest

from tripletface.cache import write_bytes_atomic


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=oct)
def umask(request) -> Iterator[int]:
    """The process umask set to each value for the test, then restored."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_write_bytes_atomic_gives_the_mode_the_umask_allows(tmp_path, umask):
    path = write_bytes_atomic(tmp_path / "models" / "encoder.onnx", b"model")
    assert path.read_bytes() == b"model"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["encoder.onnx"]


def test_write_bytes_atomic_replaces_and_leaves_nothing_behind_on_error(tmp_path):
    path = write_bytes_atomic(tmp_path / "hog.svm", b"old")
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        write_bytes_atomic(tmp_path / "taken", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hog.svm", "taken"]
