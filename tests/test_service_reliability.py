"""What survives a crash: acknowledged faces after ``kill -9`` of the server, and no orphans."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serving import (
    another_copy,
    children,
    command,
    encoded,
    face_photo,
    running_server,
    start_server,
    stop,
    wait_gone,
)

pytestmark = pytest.mark.slow


def test_kill_9_during_enrolment_loses_no_acknowledged_face(tmp_path, astronaut):
    gallery = tmp_path / "people.db"
    face = face_photo(astronaut)
    sides = [encoded(face), encoded(np.ascontiguousarray(face[:, ::-1]))]
    # One file per person: a gallery enrolls a file's content for one person only.
    photos = [another_copy(sides[i % 2], f"person-{i}") for i in range(8)]
    server = start_server(gallery)
    acknowledged, lock, stopped = [], threading.Lock(), threading.Event()

    def enroll(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not stopped.is_set():
                try:
                    response = client.post(
                        f"/v1/people/person-{i}/faces", files={"image": photos[i]}
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                assert response.status_code == 201, response.text
                with lock:
                    acknowledged.extend(response.json()["face_ids"])

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(8)]
    workers = children(server.process.pid)
    try:
        assert len(workers) == 2, workers
        for thread in threads:
            thread.start()
        while len(acknowledged) < 12:
            time.sleep(0.05)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    finally:
        stopped.set()
        for thread in threads:
            thread.join()
        stop(server.process)
    # Its detection workers notice and exit by themselves.
    assert wait_gone(workers, 5) == []

    with sqlite3.connect(gallery) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM faces")}
    assert set(acknowledged) <= stored
    options = ("--threshold", "0.0625", "--tta")
    with running_server(gallery, *options) as again, httpx.Client(base_url=again.url) as client:
        health = client.get("/healthz").json()
        assert health["faces"] == len(stored) >= len(acknowledged)
        assert client.post("/v1/identify", files={"image": photos[0]}).status_code == 200
        name = client.get("/v1/people").json()[0]["name"]  # person-I, enrolled from photos[I]
        photo = photos[int(name.removeprefix("person-"))]
        verdict = client.post("/v1/verify", files={"image": photo}, data={"name": name})
        assert verdict.json()["threshold"] == 0.0625 and verdict.json()["same"] is True
        # With --tta the probe is the mean of the photo's and its mirror's embeddings, so no
        # longer the very embedding enrolled from the same photo without it.
        assert verdict.json()["distance"] > 1e-4


def test_killed_cli_leaves_no_detection_workers(tmp_path, astronaut):
    """``enroll-dir``'s workers exit within seconds of their parent's ``kill -9``."""
    for person in range(3):
        folder = tmp_path / "people" / f"p{person}"
        folder.mkdir(parents=True)
        for k in range(2):
            Image.fromarray(np.roll(astronaut, 7 * person + k, axis=1)).save(folder / f"{k}.jpg")
    argv = command("enroll-dir", str(tmp_path / "people"), "--gallery", str(tmp_path / "g.db"))
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.monotonic() + 60
        while len(children(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = children(process.pid)
        assert len(workers) == 2 and process.poll() is None
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert wait_gone(workers, 5) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for orphan in wait_gone(workers, 0):
            os.kill(orphan, signal.SIGKILL)


def test_sigterm_finishes_the_request_in_flight_and_exits_0(tmp_path, astronaut):
    server = start_server(tmp_path / "people.db", "--access-log")
    try:
        request = httpx.Request(
            "POST", f"{server.url}/v1/identify", files={"image": encoded(astronaut, "PNG")}
        )
        body = b"".join(request.stream)
        head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as connection:
            # Half the body keeps the request in flight however fast the machine is; SIGTERM
            # comes then, and the rest of the body after it.
            connection.sendall(
                f"POST /v1/identify HTTP/1.1\r\n{head}\r\n".encode() + body[: len(body) // 2]
            )
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            connection.sendall(body[len(body) // 2 :])
            answer = connection.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.1 409"), answer[:200]  # the empty gallery's answer
        assert server.process.wait(30) == 0
        log, served = server.log.read_text(), server.process.stdout.read().decode()
        # The request was still in flight when the server began to shut down; uvicorn waited.
        assert "Waiting for connections to close" in log
        assert 'POST /v1/identify HTTP/1.1" 409' in served
    finally:
        stop(server.process)


def test_run_sh_serve_binds_loopback_and_exits_0_on_sigint(tmp_path):
    """``./run.sh serve`` as in the README, with every default but the port: it listens on
    127.0.0.1, serves, and on SIGINT closes the gallery (SQLite's -wal file goes) and exits 0."""
    # The environment run.sh would make, already installed: this test's Python and its
    # tripletface command, with run.sh's stamp saying the dev extra (serve with it) is in.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for program in ("python", "tripletface"):
        (venv / "bin" / program).symlink_to(Path(sys.executable).parent / program)
    (venv / ".installed-dev").touch()
    gallery = tmp_path / "gallery.db"
    env = {**os.environ, "TRIPLETFACE_VENV": str(venv), "TRIPLETFACE_GALLERY": str(gallery)}
    run_sh = Path(__file__).parents[1] / "run.sh"
    log = tmp_path / "serve.log"
    server = start_server(
        None, log=log, argv=["bash", str(run_sh), "serve", "--port", "0"], env=env
    )
    try:
        assert server.url.startswith("http://127.0.0.1:"), server.url
        health = httpx.get(f"{server.url}/healthz", timeout=60).json()
        assert health == {"status": "ok", "people": 0, "faces": 0, "encoder": "dlib-resnet"}
        elsewhere = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "GET"}
        # No --cors: no CORS headers, and a preflight is just a method the routes do not take.
        assert (
            "access-control-allow-origin"
            not in httpx.get(f"{server.url}/healthz", headers=elsewhere).headers
        )
        preflight = httpx.options(f"{server.url}/v1/people", headers=elsewhere)
        assert preflight.status_code == 405 and "error" in preflight.json()
        assert "access-control-allow-origin" not in preflight.headers
        assert Path(f"{gallery}-wal").exists()  # the server holds the gallery open
        workers = children(server.process.pid)
        assert len(workers) == 2, workers
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(30) == 0, log.read_text()
        assert not Path(f"{gallery}-wal").exists(), "the gallery was not closed"
        assert wait_gone(workers, 0) == []  # stopped before the server exited
    finally:
        stop(server.process)


# Programs whose helpers sleep in C (holding the GIL, as dlib's detection does) once they
# printed "ready": the helpers of watch (video), of the chip cache (train, evaluate, finetune)
# and of the demo (spawned, with multiprocessing's resource tracker); how many at least.
HELPERS = {
    "demo": (
        "from tripletface.demo import DemoConfig, _workers\n"
        "pool = _workers(DemoConfig(parallel=True))\n"
        "futures = [pool.submit(time.sleep, 60) for _ in range(2)]\n"
    ),
    "video": (
        "from tripletface.faces.extract import ChipMaker\n"
        "from tripletface.video import _Detections\n"
        "detections = _Detections(ChipMaker(None, 8, None), parallel=True)\n"
        "detections._pool.submit(time.sleep, 60)\n"
    ),
    "chips": (
        "from tripletface.data.chips import _map\n"
        "print('ready', flush=True)\n"
        "list(_map(time.sleep, [(60,), (60,)], 2))\n"
    ),
}


@pytest.mark.parametrize("kind", sorted(HELPERS))
def test_killed_process_leaves_no_helper_processes(kind):
    """The other pools of worker processes die with their parent's ``kill -9`` too."""
    code = f"import time\n{HELPERS[kind]}print('ready', flush=True)\ntime.sleep(60)\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    helpers = []
    try:
        assert process.stdout.readline() == b"ready\n"
        expected = {"chips": 2, "demo": 2, "video": 1}[kind]
        deadline = time.monotonic() + 30
        while len(children(process.pid)) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        helpers = children(process.pid)
        assert len(helpers) >= expected and process.poll() is None, helpers
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert wait_gone(helpers, 5) == []
    finally:
        stop(process)
        for orphan in wait_gone(helpers, 0):
            os.kill(orphan, signal.SIGKILL)
