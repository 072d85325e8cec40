"""Shared test set-up: deterministic torch on few threads, a bounded hypothesis profile."""

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from hypothesis import settings
from postgres_server import PostgresServer

from tripletface.faces.detect import FaceDetector

torch.set_num_threads(int(os.environ.get("TRIPLETFACE_TEST_THREADS", "2")))
settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session", autouse=True)
def user_data(tmp_path_factory):
    """The tests' own XDG data folder (exported encoders, the saved HOG detector), shared by the
    processes they start, so that no test writes to the real ~/.local/share."""
    folder = tmp_path_factory.mktemp("xdg-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(folder))
        yield folder


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photo with one face, shipped inside scikit-image's wheel (512 x 512 RGB)."""
    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def hog() -> FaceDetector:
    """dlib's HOG detector without upsampling: at 2x it also fires on the astronaut's suit."""
    return FaceDetector("hog", upsample=0)


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
