"""Real ``tripletface serve`` processes for the service tests, and the processes they start."""

import io
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo


@dataclass
class Server:
    """A running server: its base URL (no trailing slash) and process."""

    url: str
    process: subprocess.Popen
    log: Path


def command(*args: str) -> list[str]:
    """The argv of a tripletface command run by this test's Python."""
    return [sys.executable, "-m", "tripletface", *args]


def start_server(
    gallery: Path | str | None,
    *args: str,
    timeout: float = 120,
    log: Path | None = None,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    """``tripletface serve`` on a free loopback port (HOG detection: fast and enough for the
    test photos), or the server ``argv`` starts; returns once it printed the URL it serves."""
    if log is None:  # a gallery file: its server's log beside it
        if gallery is None:
            raise ValueError("start_server without a gallery file needs log=PATH")
        log = Path(gallery).with_name(Path(gallery).name + f".{time.monotonic_ns()}.log")
    if argv is None:
        argv = command("serve", "--port", "0", "--gallery", str(gallery), "--detector", "hog")
    with open(log, "wb") as stderr:
        process = subprocess.Popen([*argv, *args], stdout=subprocess.PIPE, stderr=stderr, env=env)
    deadline = time.monotonic() + timeout
    line = b""
    while b"serving " not in line:
        left = deadline - time.monotonic()
        ready = select.select([process.stdout], [], [], max(0.0, left))[0]
        line = process.stdout.readline() if ready else b""
        if process.poll() is not None or left <= 0:
            stop(process)
            raise RuntimeError(f"tripletface serve did not start: {log.read_text()[-2000:]}")
    url = line.decode().split("serving ", 1)[1].split()[0].rstrip("/")
    return Server(url, process, log)


@contextmanager
def running_server(gallery: Path, *args: str) -> Iterator[Server]:
    """A server for the duration of the block, stopped (and its workers checked) after it."""
    server = start_server(gallery, *args)
    try:
        yield server
    finally:
        stop(server.process)


def stop(process: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL if it is still running after 20 s; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Is the process still running (not gone, not a zombie)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Wait up to ``seconds`` for the processes to exit; those still alive."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return []
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def encoded(pixels: np.ndarray, kind: str = "JPEG") -> bytes:
    """The bytes of an image file holding these pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


def another_copy(photo: bytes, tag: str) -> bytes:
    """The photo's pixels as a PNG file tagged ``tag``: other file bytes, so another content
    hash (a gallery enrolls one file for one person only)."""
    info = PngInfo()
    info.add_text("copy", tag)
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(photo)) as image:
        image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def face_photo(astronaut: np.ndarray) -> np.ndarray:
    """The astronaut's head and shoulders: one face (the whole photo has a second, false one)."""
    return np.ascontiguousarray(astronaut[0:260, 100:330])


def drawn_scene(seed: int = 0) -> np.ndarray:
    """A drawn picture without a face: coloured rectangles on a gradient (240 x 320)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((240, 320, 3), np.uint8)
    image[:] = np.linspace(40, 200, 320, dtype=np.uint8)[None, :, None]
    for _ in range(6):
        top, left = rng.integers(0, 200), rng.integers(0, 280)
        image[top : top + 40, left : left + 40] = rng.integers(0, 255, 3)
    return image
