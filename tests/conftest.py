"""Shared test set-up: deterministic torch on few threads, a bounded hypothesis profile."""

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from hypothesis import settings

from tripletface.faces.detect import FaceDetector

torch.set_num_threads(int(os.environ.get("TRIPLETFACE_TEST_THREADS", "2")))
settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photo with one face, shipped inside scikit-image's wheel (512 x 512 RGB)."""
    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def hog() -> FaceDetector:
    """dlib's HOG detector without upsampling: at 2x it also fires on the astronaut's suit."""
    return FaceDetector("hog", upsample=0)


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_USER = "tripletface-pg"  # the unprivileged account that runs the server under root


class PostgresServer:
    """A PostgreSQL server of the distribution in a temporary folder, on a loopback port."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.data = folder / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._user = {}
        if os.geteuid() == 0:
            if subprocess.run(["id", POSTGRES_USER], capture_output=True).returncode != 0:
                subprocess.run(
                    [
                        "useradd",
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                        POSTGRES_USER,
                    ],
                    check=True,
                )
            shutil.chown(folder, POSTGRES_USER)
            self._user = {"user": POSTGRES_USER}
        self._run("initdb", "-D", self.data, "-U", "tripletface", "--auth=trust", "-E", "UTF8")

    def _run(self, program: str, *args) -> None:
        subprocess.run(
            [POSTGRES_BIN / program, *map(str, args)],
            check=True,
            capture_output=True,
            cwd=self.folder,
            **self._user,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", self.data, "-l", self.folder / "log", "-o", options, "-w", "start"
        )

    def stop(self) -> None:
        """Stop the server at once (clients see their connections drop)."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def url(self, schema: str) -> str:
        """A URL whose tables live in their own schema (created now), one per test."""
        import psycopg

        base = f"postgresql://tripletface@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        return f"{base}?options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """One PostgreSQL server for the test session, stopped and deleted after it, also on failure."""
    folder = Path(tempfile.mkdtemp(prefix="tripletface-pg-"))
    folder.chmod(0o755)
    try:
        server = PostgresServer(folder)
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres, request) -> str:
    """A fresh, empty gallery database on the session's server."""
    return postgres.url("t_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16])
