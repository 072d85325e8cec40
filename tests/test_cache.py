"""Files written atomically for the user: whole or absent, and readable like any file they make."""

import os
import re
import secrets
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from tripletface.cache import (
    remove_stale_temporaries,
    temporary_path,
    write_atomic,
    write_bytes_atomic,
)


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


def test_write_atomic_without_replace_takes_the_next_free_name(tmp_path, monkeypatch):
    def write(data: bytes) -> Callable[[IO], int]:
        return lambda stream: stream.write(data)

    first = write_atomic(tmp_path / "door-track00001.png", write(b"one"), replace=False)
    (tmp_path / "door-track00001-3.png").symlink_to("nowhere")  # a dangling link holds a name
    second = write_atomic(first, write(b"two"), replace=False)
    third = write_atomic(first, write(b"three"), replace=False)
    assert [first.name, second.name, third.name] == [
        "door-track00001.png",
        "door-track00001-2.png",
        "door-track00001-4.png",
    ]
    assert [p.read_bytes() for p in (first, second, third)] == [b"one", b"two", b"three"]

    def fail(stream: IO) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(first, fail, replace=False)
    assert len(list(tmp_path.iterdir())) == 4  # no name taken, no temporary left

    def refuse(source: Path, target: Path) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="read-only"):
        write_atomic(first, write(b"five"), replace=False)
    assert len(list(tmp_path.iterdir())) == 4  # the name it had taken is free again


def _temporary_of(path: Path, pid: int) -> Path:
    """A leftover temporary of ``path`` as the writer of process ``pid`` would have named it."""
    tmp = path.with_name(f".{path.name}.{pid}-{secrets.token_hex(8)}.tmp")
    tmp.write_bytes(b"partial")
    return tmp


def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_path_is_hidden_beside_the_file_and_names_this_process(tmp_path):
    target = tmp_path / "encoder.onnx"
    first, second = temporary_path(target), temporary_path(target)
    assert first.parent == tmp_path and first != second
    assert re.fullmatch(rf"\.encoder\.onnx\.{os.getpid()}-[0-9a-f]{{16}}\.tmp", first.name)


@pytest.mark.parametrize("name", ["hog.svm", "a[1]*?.bin"])
def test_a_dead_writers_temporary_goes_at_the_next_write(tmp_path, name):
    target = tmp_path / name
    _temporary_of(target, _dead_pid())
    write_bytes_atomic(target, b"new")
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_temporaries_of_live_writers_and_other_files_are_kept(tmp_path):
    target = tmp_path / "model.onnx"
    dead = _dead_pid()
    live = subprocess.Popen(["sleep", "30"])
    try:
        kept = {
            _temporary_of(target, os.getpid()),
            _temporary_of(target, live.pid),
            _temporary_of(tmp_path / "model.onnx.key", dead),  # another file's
            _temporary_of(tmp_path / "other.onnx", dead),
        }
        for name in [
            ".model.onnx.notapid.tmp",
            f".model.onnx.{dead}.tmp",
            f".model.onnx.{dead}-x.tmp",
        ]:
            (tmp_path / name).write_bytes(b"not ours")
            kept.add(tmp_path / name)
        stale = _temporary_of(target, dead)
        write_bytes_atomic(target, b"model")
        assert not stale.exists()
        assert set(tmp_path.iterdir()) == kept | {target}
    finally:
        live.kill()
        live.wait()


def test_a_writer_of_another_user_counts_as_alive(tmp_path, monkeypatch):
    target = tmp_path / "keys.txt"
    tmp = _temporary_of(target, _dead_pid())

    def not_permitted(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", not_permitted)
    remove_stale_temporaries(target)
    assert tmp.exists()


def test_companions_go_with_their_temporary_and_missing_folders_are_ignored(tmp_path):
    target = tmp_path / "gallery.db"
    tmp = _temporary_of(target, _dead_pid())
    for suffix in ("-wal", "-shm"):
        tmp.with_name(tmp.name + suffix).write_bytes(b"")
    remove_stale_temporaries(target, ("-wal", "-shm", "-journal"))
    assert list(tmp_path.iterdir()) == []
    remove_stale_temporaries(tmp_path / "absent" / "gallery.db")


def test_a_large_folder_is_listed_once_every_thousand_files_of_writes(tmp_path, monkeypatch):
    """In a folder of 3,000 files a write lists it, the next three do not; a dead writer's
    temporary still goes, at the first later write that lists."""
    for i in range(3000):
        (tmp_path / f"snapshot-{i}.png").touch()
    target = tmp_path / "index.bin"
    real, listed = os.scandir, []

    def counted(path=".") -> Iterator[os.DirEntry]:
        """os.scandir, noting each listing of the folder."""
        listed.append(Path(path) == tmp_path)
        return real(path)

    monkeypatch.setattr(os, "scandir", counted)
    write_bytes_atomic(target, b"first")
    stale = _temporary_of(target, _dead_pid())
    for write in range(9):
        write_bytes_atomic(target, b"again")
        assert stale.exists() == (write < 3)
    assert listed.count(True) == 3  # writes 1, 5 and 9 of 10


# Writes 64 MiB to the target through write_atomic, and waits half-way for the kill.
_KILLED_WRITER = """
import sys, time
from tripletface.cache import write_atomic

def write(stream):
    stream.write(bytes(32 << 20))
    stream.flush()
    print("half", flush=True)
    time.sleep(60)
    stream.write(bytes(32 << 20))

write_atomic(sys.argv[1], write)
"""


@pytest.mark.parametrize("old", [b"old", None], ids=["replacing", "new"])
def test_a_writer_killed_mid_write_leaves_the_old_file_and_its_temporary_goes_later(tmp_path, old):
    target = tmp_path / "encoder.onnx"
    if old is not None:
        write_bytes_atomic(target, old)
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline() == "half\n"
        (leftover,) = tmp_path.glob(f".encoder.onnx.{child.pid}-*.tmp")
        assert leftover.stat().st_size == 32 << 20
    finally:
        child.kill()  # SIGKILL: no handler, no finally, no cleanup runs in the child
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert (target.read_bytes() if target.exists() else None) == old
    assert leftover.exists()
    write_atomic(target, lambda stream: stream.write(b"new"))
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["encoder.onnx"]
