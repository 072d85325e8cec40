"""Several real ``tripletface serve`` processes sharing one PostgreSQL gallery, under faults:
a server killed during concurrent enrolment, the database stopped under a running server, and a
server started while another writes."""

import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import Server, another_copy, command, encoded, face_photo, start_server, stop

from tripletface.errors import GalleryUnavailable
from tripletface.gallery import open_gallery
from tripletface.gallery.postgres import without_password

pytestmark = pytest.mark.slow


def start_on(url: str, log: Path, *options: str, timeout: float = 180) -> Server:
    """``tripletface serve --gallery URL`` on a free loopback port, once it prints its URL."""
    return start_server(url, *options, timeout=timeout, log=log)


@contextmanager
def serving(url: str, log: Path):
    server = start_on(url, log)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            client.server = server
            yield client
    finally:
        stop(server.process)


@pytest.fixture(scope="module")
def shared(postgres, tmp_path_factory):
    """One gallery database and a first server on it, for the whole module."""
    url = postgres.url("servers")
    folder = tmp_path_factory.mktemp("servers")
    with serving(url, folder / "a.log") as first:
        yield url, folder, first


@pytest.fixture(scope="module")
def photos(astronaut):
    face = face_photo(astronaut)
    return {"face": encoded(face), "mirrored": encoded(np.ascontiguousarray(face[:, ::-1]))}


def enroll(client: httpx.Client, name: str, photo: bytes) -> list[int] | None:
    """The face ids of an acknowledged enrolment of the photo's pixels (a file of their own:
    one file belongs to one person), None if the server did not answer 201."""
    try:
        mine = another_copy(photo, name)
        response = client.post(f"/v1/people/{name}/faces", files={"image": mine})
    except httpx.TransportError:
        return None
    return response.json()["face_ids"] if response.status_code == 201 else None


def enrolling(
    client: httpx.Client, prefix: str, photo: bytes, acked: dict, stop_at: threading.Event
):
    """Enroll prefix-0, prefix-1, ... until told to stop or the server is gone."""
    number = 0
    while not stop_at.is_set():
        ids = enroll(client, f"{prefix}-{number}", photo)
        if ids is None and client.server.process.poll() is not None:
            return
        if ids is not None:
            acked[f"{prefix}-{number}"] = ids
        number += 1


def test_killed_server_loses_nothing_acknowledged_and_others_see_it_at_once(shared, photos):
    url, folder, first = shared
    with serving(url, folder / "b.log") as second:
        # Visible on the other server from its next request (it reads the change log first).
        assert enroll(second, "mirror", photos["mirrored"])
        acknowledged = time.monotonic()
        faces = first.post("/v1/identify", files={"image": photos["mirrored"]}).json()["faces"]
        assert faces[0]["name"] == "mirror" and faces[0]["distance"] < 1e-6
        assert time.monotonic() - acknowledged < 10  # the 1 s figure is bench/gallery_scale.py's

        acked: dict[str, list[int]] = {}
        done = threading.Event()
        threads = [
            threading.Thread(target=enrolling, args=(client, prefix, photos["face"], acked, done))
            for client, prefix in ((first, "a"), (second, "b"), (second, "c"))
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while (
            sum(name.startswith(("b", "c")) for name in acked) < 6 and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        second.server.process.send_signal(signal.SIGKILL)
        second.server.process.wait()
        time.sleep(1)
        done.set()
        for thread in threads:
            thread.join()
    assert sum(name.startswith(("b", "c")) for name in acked) >= 6
    with open_gallery(url, None, None, None, read_only=True) as gallery:
        people = dict(gallery.people())
        names = gallery.names_of([i for ids in acked.values() for i in ids])
    for name, ids in acked.items():
        assert people.get(name) == 1 and [names[i] for i in ids] == [name], name
    listed = {p["name"]: p["faces"] for p in first.get("/v1/people").json()}
    assert listed == people


def test_a_stopped_database_gives_503_and_one_line_cli_errors_then_recovers(
    shared, postgres, photos
):
    url, _, first = shared
    assert enroll(first, "before", photos["face"])
    postgres.stop()
    try:
        for response in (
            first.get("/v1/people"),
            first.post("/v1/identify", files={"image": photos["face"]}),
            first.post("/v1/people/during/faces", files={"image": photos["face"]}),
        ):
            assert response.status_code == 503, response.text
            message = response.json()["error"]
            assert "cannot be reached" in message and "\n" not in message
        # Monitoring still scrapes the server, the 503s counted (the gallery gauges as last seen).
        metrics = first.get("/metrics")
        assert metrics.status_code == 200 and 'status="503"' in metrics.text
        cli = subprocess.run(command("people", "--gallery", url), capture_output=True, text=True)
        assert cli.returncode == 3
        assert cli.stderr.startswith("tripletface: error: ") and cli.stderr.count("\n") == 1
        assert "cannot be reached" in cli.stderr
    finally:
        postgres.start()
    # The server reconnects by itself on its next request.
    assert first.get("/v1/people").status_code == 200
    assert enroll(first, "after", photos["face"])
    names = {p["name"] for p in first.get("/v1/people").json()}
    assert {"before", "after"} <= names and "during" not in names


def test_a_server_started_while_another_writes_sees_a_consistent_gallery(shared, photos):
    url, folder, first = shared
    acked: dict[str, list[int]] = {}
    done = threading.Event()
    writer = threading.Thread(target=enrolling, args=(first, "w", photos["face"], acked, done))
    writer.start()
    try:
        with serving(url, folder / "c.log") as late:
            for _ in range(3):
                before = set(acked)
                listed = {p["name"]: p["faces"] for p in late.get("/v1/people").json()}
                assert before <= set(listed)
                assert all(listed[name] == 1 for name in listed if name.startswith("w-"))
                faces = late.post("/v1/identify", files={"image": photos["face"]}).json()["faces"]
                assert faces[0]["distance"] < 1e-6
    finally:
        done.set()
        writer.join()
    assert len(acked) >= 3
    with open_gallery(url, None, None, None, read_only=True) as gallery:
        people = dict(gallery.people())
    assert all(people[name] == 1 for name in acked)


def test_a_restarted_database_costs_no_request(shared, postgres, photos):
    """A connection the restart dropped is found broken only when used: the request that finds
    it is answered on a new connection, a read as well as a write."""
    _, _, first = shared
    assert enroll(first, "restart-before", photos["face"])
    postgres.stop()
    postgres.start()
    assert first.get("/v1/people").status_code == 200
    postgres.stop()
    postgres.start()
    assert enroll(first, "restart-after", photos["face"])
    names = {p["name"] for p in first.get("/v1/people").json()}
    assert {"restart-before", "restart-after"} <= names


def test_no_password_is_shown_neither_in_the_user_part_nor_as_a_parameter():
    url = "postgresql://tf:s3cret@127.0.0.1:1/faces?sslmode=disable&password=s3cret&user=tf"
    shown = without_password(url)
    assert "s3cret" not in shown and shown.startswith("postgresql://tf:***@127.0.0.1:1/faces?")
    assert "sslmode=disable" in shown and "password=***" in shown and shown.endswith("user=tf")
    # What a client of the service reads when the database is down (/healthz needs no key).
    with pytest.raises(GalleryUnavailable) as refused:
        open_gallery("postgresql://tf@127.0.0.1:1/faces?password=s3cret", "e", "v", 4)
    assert "s3cret" not in str(refused.value) and "password=***" in str(refused.value)
