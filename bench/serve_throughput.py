"""Identify requests per second and latency of ``tripletface serve`` under concurrent clients,
against a server written the way face_recognition's web-service example serves.

The job: 40 persons enrolled from one photo each (20 from ORL, 20 from celeba299: grayscale
92 x 112 studio faces and colour photos in the wild), then POST /identify of their other photos
(3 per person, 120 probes, cycled) from 1, 4 and 16 concurrent clients over loopback, a bounded
number of requests per setting. Both servers get the same photo bytes as multipart uploads.

- tripletface: ``tripletface serve --detector hog`` (detection in 2 worker processes, the
  chips of concurrent requests batched through one encoder pass). HOG at one upsampling is
  the baseline's detector too; the default ``auto`` adds HOG at 2x and dlib's CNN for photos
  where HOG finds nothing, about 5 s a photo on this machine for 3 of the 120 probes, which
  then dominate the tail (``--detector auto`` measures it).
- baseline: Flask on werkzeug serving one request at a time (dlib is not thread-safe), per
  request ``face_recognition.load_image_file`` + ``face_encodings`` + ``compare_faces`` against
  the enrolled encodings, the first match's name answered, as face_recognition's
  ``examples/web_service_example.py`` does. This file is that server too (``--baseline-server``).

Settings are interleaved, the order of the two servers alternates, and the median over rounds
of each figure is printed with the load average. The answers (the set of names given to each
probe) are compared, and each server's accuracy against the folder names is printed.
Goal: at 16 clients at least 5x the baseline's requests per second, p99 below its p50.

    python bench/serve_throughput.py [--rounds 3] [--data ../shared/data]
"""

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from tripletface.data.images import person_images

CLIENTS = (1, 4, 16)
REQUESTS = {1: 24, 4: 48, 16: 96}  # per setting and server: bounded, a few seconds each


def photo_set(data: Path, persons: int = 20, probes: int = 3):
    """(enrolled [(name, path)], probes [(name, path)]): the first photo of the first
    ``persons`` persons of ORL and of celeba299 with enough photos, and their next ones."""
    known, unknown = [], []
    for corpus in ("orl", "celeba299"):
        chosen = [
            (person, paths)
            for person, paths in person_images(data / corpus).items()
            if len(paths) > probes
        ][:persons]
        for person, paths in chosen:
            name = f"{corpus}-{person}"
            known.append((name, paths[0]))
            unknown += [(name, path) for path in paths[1 : 1 + probes]]
    return known, unknown


def start(argv: list[str], log: Path, env: dict | None = None, timeout: float = 300):
    """A server process started with ``argv`` (stderr to ``log``) and the URL it printed."""
    with open(log, "wb") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=env)
    deadline, line = time.monotonic() + timeout, b""
    while b"serving " not in line:
        ready = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = process.stdout.readline() if ready[0] else b""
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{' '.join(argv)} did not start: {log.read_text()[-3000:]}")
    return process, line.decode().split("serving ", 1)[1].split()[0].rstrip("/")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def names_of(answer: dict) -> frozenset:
    """The names a server gave in one identify answer (strangers left out)."""
    return frozenset(face["name"] for face in answer["faces"] if face["name"] is not None)


def load(url: str, route: str, photos: list[bytes], clients: int, count: int):
    """Send ``count`` identify requests from ``clients`` threads; (seconds, latencies, answers
    by photo index, connections dropped by the server and retried)."""
    latencies, answers, lock = [], {}, threading.Lock()
    counter, dropped = iter(range(count)), []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as session:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                begin = time.perf_counter()
                for attempt in range(4):
                    try:
                        files = {"image": photos[index % len(photos)]}
                        response = session.post(route, files=files)
                        break
                    except (httpx.RemoteProtocolError, httpx.ReadError):
                        # werkzeug under load drops some connections: the request is sent
                        # again, its latency counting from the first attempt.
                        dropped.append(index)
                        if attempt == 3:
                            raise
                elapsed = time.perf_counter() - begin
                response.raise_for_status()
                with lock:
                    latencies.append(elapsed)
                    answers[index % len(photos)] = names_of(response.json())

    begin = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(client) for _ in range(clients)]:
            done.result()
    return time.perf_counter() - begin, latencies, answers, len(dropped)


def baseline_server(known_file: Path) -> None:
    """The baseline: Flask + face_recognition, one encoding per face per request."""
    import face_recognition
    from flask import Flask, jsonify, request
    from werkzeug.serving import make_server

    names, encodings = [], []
    for line in known_file.read_text().splitlines():
        name, path = line.split("\t")
        found = face_recognition.face_encodings(face_recognition.load_image_file(path))
        if found:  # a photo without a detected face enrolls nobody, as in the example
            names.append(name)
            encodings.append(found[0])

    app = Flask("baseline")

    @app.route("/identify", methods=["POST"])
    def identify():
        image = face_recognition.load_image_file(request.files["image"])
        faces = []
        for encoding in face_recognition.face_encodings(image):
            matches = face_recognition.compare_faces(encodings, encoding)
            faces.append({"name": names[matches.index(True)] if True in matches else None})
        return jsonify({"faces": faces})

    # One request at a time, as the example is described: dlib's detector and encoder are not
    # thread-safe (threaded, this server dies with "free(): corrupted unsorted chunks").
    server = make_server("127.0.0.1", 0, app, threaded=False)
    print(f"serving http://127.0.0.1:{server.server_port}/", flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--detector",
        default="hog",
        help="tripletface's detector: hog (default) is the baseline's; auto adds CNN fallbacks",
    )
    parser.add_argument("--baseline-server", type=Path, metavar="KNOWN_TSV", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_server)
        return

    from identify_speed import SHIM  # face_recognition_models needs pkg_resources

    known, unknown = photo_set(args.data)
    photos = [path.read_bytes() for _, path in unknown]
    truth = [name for name, _ in unknown]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "shim").mkdir()
        (work / "shim" / "pkg_resources.py").write_text(SHIM)
        (work / "known.tsv").write_text("".join(f"{n}\t{p}\n" for n, p in known))
        env = {**os.environ, "PYTHONPATH": str(work / "shim")}
        tripletface = [sys.executable, "-m", "tripletface"]
        servers = {
            "tripletface": start(
                [
                    *tripletface,
                    "serve",
                    "--port",
                    "0",
                    "--gallery",
                    str(work / "g.db"),
                    "--detector",
                    args.detector,
                ],
                work / "tripletface.log",
            ),
            "baseline": start(
                [sys.executable, __file__, "--baseline-server", str(work / "known.tsv")],
                work / "baseline.log",
                env,
            ),
        }
        routes = {"tripletface": "/v1/identify", "baseline": "/identify"}
        try:
            with httpx.Client(base_url=servers["tripletface"][1], timeout=300) as client:
                for name, path in known:
                    client.post(f"/v1/people/{name}/faces", files={"image": path.read_bytes()})
                enrolled = client.get("/healthz").json()["faces"]
            for server, (_, url) in servers.items():  # warm-up: models loaded, pools started
                load(url, routes[server], photos[:8], 4, 8)
            figures = {(s, c): [] for s in servers for c in CLIENTS}
            retried = dict.fromkeys(servers, 0)
            answers = {}
            for round_ in range(args.rounds):
                for clients in CLIENTS:
                    order = list(servers) if (round_ + clients) % 2 else list(servers)[::-1]
                    for server in order:
                        seconds, latencies, answers[server], drops = load(
                            servers[server][1],
                            routes[server],
                            photos,
                            clients,
                            REQUESTS[clients],
                        )
                        retried[server] += drops
                        p50, p99 = np.percentile(latencies, [50, 99])
                        figures[server, clients].append((len(latencies) / seconds, p50, p99))
                print(f"round {round_ + 1} done, load {os.getloadavg()[0]:.1f}", flush=True)
            # Every probe once more at 16 clients, for the answers.
            for server, (_, url) in servers.items():
                answers[server] = load(url, routes[server], photos, 16, len(photos))[2]
        except Exception:
            for server in servers:
                print(f"{server} log:\n{(work / f'{server}.log').read_text()[-3000:]}")
            raise
        finally:
            for process, _ in servers.values():
                stop(process)

    import torch

    print(
        f"\n{len(known)} persons enrolled ({enrolled} faces by tripletface), {len(photos)} "
        f"probe photos (ORL and celeba299); load average {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (1 min), {os.cpu_count()} cores; tripletface serve "
        f"--detector {args.detector}: 2 detection workers, encoder on "
        f"{max(1, (os.cpu_count() or 1) - 2)} torch thread(s) (this process: "
        f"{torch.get_num_threads()}); medians of {args.rounds} rounds"
    )
    print(
        f"{'clients':>7} | {'tripletface req/s':>17} {'p50':>7} {'p99':>7} | "
        f"{'baseline req/s':>14} {'p50':>7} {'p99':>7} | {'speed-up':>8} | p99 < baseline p50"
    )
    for clients in CLIENTS:
        ours, base = (
            [statistics.median(column) for column in zip(*figures[s, clients], strict=True)]
            for s in ("tripletface", "baseline")
        )
        print(
            f"{clients:>7} | {ours[0]:>17.1f} {ours[1] * 1e3:>5.0f}ms {ours[2] * 1e3:>5.0f}ms | "
            f"{base[0]:>14.1f} {base[1] * 1e3:>5.0f}ms {base[2] * 1e3:>5.0f}ms | "
            f"{ours[0] / base[0]:>7.1f}x | {'yes' if ours[2] < base[1] else 'no'}"
        )
    for server in ("tripletface", "baseline"):
        right = sum(truth[i] in answers[server].get(i, ()) for i in range(len(truth)))
        print(
            f"{server:>11}: names the right person on {right}/{len(truth)} probes; "
            f"{retried[server]} dropped connections retried"
        )
    same = sum(
        answers["tripletface"].get(i) == answers["baseline"].get(i) for i in range(len(truth))
    )
    print(f"same set of names from both servers on {same}/{len(truth)} probes")


if __name__ == "__main__":
    main()
