"""Galleries at scale: CLI commands at 40, 100k and 1M faces in SQLite, enrolment-to-visibility
between two clients and two servers of one PostgreSQL gallery, and IVF-PQ search at 10M faces.

1. ``sqlite``: galleries of the 40 ORL persons' first photos (enrolled by ``tripletface
   enroll-dir``) plus random clustered 128-d faces, 10 a person, added through
   ``FaceRecognizer(path).gallery.add_faces(name, embeddings)``, as a user importing embeddings
   would. Then each command runs as a user runs it (``tripletface identify s1/05.png --gallery G``,
   a new process, the installed entry point), the sizes and commands interleaved, median of
   ``--rounds`` runs; peak memory is the process's maximum resident set (wait4). The import
   (a process of its own: its time and peak memory) keeps the saved index in step as it goes, so
   the first ``identify`` after it opens that index: its time is printed apart (galleries
   imported in this run only; cached ones are reused, ``--reimport`` imports them again).
   ``serve``: ``tripletface serve`` started on each, time to its first identify answered.
2. ``postgres``: a PostgreSQL 15 server in a temporary folder; process A enrols a face and notes
   when the commit returned, process B searches in a loop (a GalleryIndex over its own
   connection, as a server holds one) and notes when it first finds it. Then two ``tripletface
   serve`` on one database: ORL persons enrolled on one, identified on the other at once.
3. ``ivfpq``: 10M random clustered faces (5 GB of float32, written once to a cache file),
   FaissIndex(pq=32) trained and filled from it, search latency per probe (1 thread) and bytes
   per face, top-1 agreement with exact search on a sample of probes, raw and re-ranked by exact
   distances over its 16 extra candidates (what GalleryIndex does with the gallery's faces).

    python bench/gallery_scale.py [--parts sqlite postgres ivfpq] [--rounds 5] [--cache DIR]
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--parts", nargs="+", default=["sqlite", "serve", "postgres", "ivfpq"])
parser.add_argument("--sizes", type=int, nargs="+", default=[40, 100_000, 1_000_000])
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--reimport", action="store_true", help="import the cached galleries again")
parser.add_argument("--import-into", type=Path, help=argparse.SUPPRESS)  # the import's process
parser.add_argument("--enrolments", type=int, default=30, help="PostgreSQL visibility samples")
parser.add_argument("--big", type=int, default=10_000_000, help="faces for the IVF-PQ part")
parser.add_argument("--probes", type=int, default=200, help="IVF-PQ probes (agreement sample)")
parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tf-gallery-scale")
parser.add_argument(
    "--orl", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/orl"
)
args = parser.parse_args()

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = Path(sys.executable).with_name("tripletface")
DIM = 128
SPREAD = 0.04  # per coordinate around a person's centre, as bench/gallery_search.py
FACES_PER_PERSON = 10


def clustered(persons: int, seed: int) -> np.ndarray:
    """persons x 10 unit-length faces scattered around random person centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((persons, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    faces = np.repeat(centres, FACES_PER_PERSON, 0)
    faces += SPREAD * rng.standard_normal(faces.shape).astype(np.float32)
    return faces / np.linalg.norm(faces, axis=1, keepdims=True)


def run(command: list[str]) -> tuple[float, float, int, float]:
    """(seconds, peak resident MB, exit code, CPU seconds with its workers) of one process, as
    a user starts it."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    error = child.stderr.read().decode()
    child.stderr.close()
    if child.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(map(str, command))} failed ({child.returncode}): {error}")
    return seconds, usage.ru_maxrss / 1024, child.returncode, usage.ru_utime + usage.ru_stime


def machine() -> str:
    import torch

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"load average {load} (the machine is shared with other jobs: figures move with it); "
        f"{os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} threads "
        "in this process and in the commands (their defaults)"
    )


#: (seconds, peak resident MB) of each gallery size imported in this run.
IMPORTS: dict[int, tuple[float, float]] = {}


def build_sqlite(size: int) -> Path:
    """A gallery of the 40 ORL persons and (size - 40) random faces, cached between runs."""
    path = args.cache / f"g{size}.db"
    if args.reimport and size != 40 and size not in IMPORTS:
        path.unlink(missing_ok=True)
        Path(f"{path}.faiss").unlink(missing_ok=True)
    if path.exists():
        return path
    args.cache.mkdir(parents=True, exist_ok=True)
    base = args.cache / "g40.db"
    if not base.exists():
        people = args.cache / "orl-first"
        for person in sorted(p.name for p in args.orl.iterdir() if p.is_dir()):
            (people / person).mkdir(parents=True, exist_ok=True)
            link = people / person / "01.png"
            if not link.exists():
                link.symlink_to((args.orl / person / "01.png").resolve())
        subprocess.run([PROGRAM, "enroll-dir", people, "--gallery", base], check=True)
    if size == 40:
        return base
    from tripletface.gallery.copy import copy_gallery

    tmp = path.with_suffix(".tmp")
    for stale in (tmp, Path(f"{tmp}.faiss"), Path(f"{path}.faiss")):
        stale.unlink(missing_ok=True)
    copy_gallery(base, tmp)  # the 40 ORL persons (a file copy could miss what is in the WAL)
    seconds, peak, code, _ = run(
        [sys.executable, __file__, "--import-into", tmp, "--sizes", str(size)]
    )
    if code != 0:
        raise SystemExit(f"importing {size:,} faces into {tmp} failed")
    IMPORTS[size] = seconds, peak
    if Path(f"{tmp}.faiss").exists():
        os.replace(f"{tmp}.faiss", f"{path}.faiss")
    os.replace(tmp, path)
    return path


def import_random(path: Path, size: int) -> None:
    """Add (size - 40) random faces, 10 a person, as a user importing embeddings would."""
    from tripletface import FaceRecognizer

    rec = FaceRecognizer(path)
    persons = (size - 40) // FACES_PER_PERSON
    started = time.perf_counter()
    for chunk in range(0, persons, 10_000):
        faces = clustered(min(10_000, persons - chunk), seed=chunk)
        for i in range(len(faces) // FACES_PER_PERSON):
            rows = faces[i * FACES_PER_PERSON : (i + 1) * FACES_PER_PERSON]
            rec.gallery.add_faces(f"random{chunk + i:07d}", rows)
        print(
            f"  {size}: {chunk + len(faces) // 10} persons, {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    rec.gallery.close()


def sqlite_part() -> None:
    print("## CLI commands, SQLite gallery")
    print(machine())
    galleries = {size: build_sqlite(size) for size in args.sizes}
    orl = args.orl.resolve()
    probe, other = str(orl / "s1" / "05.png"), str(orl / "s2" / "06.png")
    run([PROGRAM, "identify", probe, "--gallery", galleries[args.sizes[0]]])  # warm-up
    first = {
        size: run([PROGRAM, "identify", probe, "--gallery", path])
        for size, path in galleries.items()
        if size in IMPORTS
    }
    commands = {
        "identify": lambda g, r: [PROGRAM, "identify", probe, "--gallery", g],
        "verify": lambda g, r: [PROGRAM, "verify", probe, "s1", "--gallery", g],
        "people": lambda g, r: [PROGRAM, "people", "--gallery", g],
        "enroll": lambda g, r: [PROGRAM, "enroll", f"newcomer{r}", other, "--gallery", g],
        "remove": lambda g, r: [PROGRAM, "remove", f"newcomer{r}", "--gallery", g],
    }
    times = {(size, name): [] for size in galleries for name in commands}
    memory = {(size, name): [] for size in galleries for name in commands}
    cpus = {(size, name): [] for size in galleries for name in commands}
    for r in range(args.rounds):
        for size, path in galleries.items():
            for name, command in commands.items():
                seconds, peak, _, cpu = run(command(str(path), r))
                times[size, name].append(seconds)
                cpus[size, name].append(cpu)
                memory[size, name].append(peak)
    print(
        f"medians of {args.rounds} rounds, sizes and commands interleaved: wall time, CPU time "
        "(the command and its detection workers: steadier on a shared machine), peak memory"
    )
    header = " | ".join(f"{size:,} faces" for size in galleries)
    big, small = args.sizes[-1], args.sizes[0]
    print(f"| command | {header} | ratio {big:,} / {small}, wall | CPU |")
    print("|---|" + "---:|" * (len(galleries) + 2))
    for name in commands:
        wall = {s: statistics.median(times[s, name]) for s in galleries}
        cpu = {s: statistics.median(cpus[s, name]) for s in galleries}
        cells = [
            f"{wall[s]:.2f} s, {cpu[s]:.2f} s, {max(memory[s, name]):.0f} MB" for s in galleries
        ]
        ratios = f"{wall[big] / wall[small]:.2f}x | {cpu[big] / cpu[small]:.2f}x"
        print(f"| {name} | " + " | ".join(cells) + f" | {ratios} |")
    for size, (seconds, peak, _, _) in first.items():
        took, most = IMPORTS[size]
        print(
            f"{size:,} faces: the import took {took:.0f} s and {most:.0f} MB at most; the first "
            f"identify after it {seconds:.2f} s, {peak:.0f} MB (ratio to the median of 40 "
            f"faces: {seconds / statistics.median(times[args.sizes[0], 'identify']):.2f}x)"
        )


def serve_part() -> None:
    """The first request of ``tripletface serve`` at each size: start to the first answer."""
    import httpx

    sys.path.insert(0, str(ROOT / "tests"))
    from test_gallery_servers import start_on

    print("## First request of tripletface serve, SQLite gallery")
    print(machine())
    probe = (args.orl.resolve() / "s1" / "05.png").read_bytes()
    results = {size: [] for size in args.sizes}
    for _ in range(args.rounds):
        for size in args.sizes:
            started = time.perf_counter()
            server = start_on(
                str(build_sqlite(size)), args.cache / "serve.log", "--detector", "auto"
            )
            with httpx.Client(base_url=server.url, timeout=300) as client:
                faces = client.post("/v1/identify", files={"image": probe}).json()["faces"]
            seconds = time.perf_counter() - started
            assert faces[0]["name"] == "s1", faces
            server.process.send_signal(signal.SIGTERM)
            _, _, usage = os.wait4(server.process.pid, 0)
            server.process.stdout.close()
            results[size].append((seconds, usage.ru_maxrss / 1024))
    for size, runs in results.items():
        median = statistics.median(r[0] for r in runs)
        print(
            f"{size:,} faces: start to first identify answered {median:.2f} s "
            f"(median of {len(runs)}), peak {max(r[1] for r in runs):.0f} MB"
        )


READER = """
import sys, time
import numpy as np
from tripletface.gallery import open_gallery
from tripletface.search import GalleryIndex
gallery = open_gallery(sys.argv[1], "bench", "fp", 128)
index = GalleryIndex(gallery)
wanted = {}
print("ready", flush=True)
for line in sys.stdin:
    name, seed = line.split()
    probe = np.random.default_rng(int(seed)).standard_normal((1, 128)).astype(np.float32)
    while True:
        _, found = index.search(probe, 1)
        if index.names[int(found[0, 0])] == name:
            print(name, time.time(), flush=True)
            break
"""


def postgres_part() -> None:
    print("## Enrolment to visibility, two clients of one PostgreSQL gallery")
    print(machine())
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres_server import PostgresServer

    from tripletface.gallery import open_gallery

    folder = Path(tempfile.mkdtemp(prefix="tripletface-pg-"))
    folder.chmod(0o755)
    server = PostgresServer(folder)
    server.start()
    try:
        url = server.url("bench")
        writer = open_gallery(url, "bench", "fp", DIM)
        writer.add_faces("seed", clustered(100, seed=1))
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert reader.stdout.readline().strip() == "ready"
            delays = []
            for i in range(args.enrolments):
                face = np.random.default_rng(1000 + i).standard_normal((1, DIM)).astype(np.float32)
                reader.stdin.write(f"new{i} {1000 + i}\n")
                reader.stdin.flush()
                time.sleep(0.05)  # the reader is searching when the enrolment commits
                writer.add_faces(f"new{i}", face)
                acknowledged = time.time()
                name, seen = reader.stdout.readline().split()
                assert name == f"new{i}"
                delays.append(float(seen) - acknowledged)
        finally:
            reader.stdin.close()
            reader.wait(timeout=30)
        writer.close()
        delays_ms = sorted(1000 * d for d in delays)
        print(
            f"gallery clients, {len(delays)} enrolments: visible on the other client after median "
            f"{statistics.median(delays_ms):.1f} ms, max {delays_ms[-1]:.1f} ms (limit 1000 ms)"
        )
        servers_part(server.url("servers"), folder)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def servers_part(url: str, folder: Path) -> None:
    """Two ``tripletface serve`` on one database: ORL person i enrolled (its first photo) on
    one, its second photo identified on the other as soon as the enrolment is acknowledged."""
    import httpx
    from serving import stop
    from test_gallery_servers import start_on

    first = start_on(url, folder / "a.log", "--detector", "auto")
    second = start_on(url, folder / "b.log", "--detector", "auto")
    try:
        with (
            httpx.Client(base_url=first.url, timeout=120) as a,
            httpx.Client(base_url=second.url, timeout=120) as b,
        ):
            orl = args.orl.resolve()
            persons = sorted(p.name for p in orl.iterdir() if p.is_dir())[: args.enrolments]
            latencies, first_try = [], 0
            b.post("/v1/identify", files={"image": (orl / "s1" / "03.png").read_bytes()})  # warm
            for person in persons:
                photo = (orl / person / "01.png").read_bytes()
                probe = (orl / person / "02.png").read_bytes()
                answer = a.post(f"/v1/people/{person}/faces", files={"image": photo})
                assert answer.status_code == 201, answer.text
                acknowledged, tries = time.perf_counter(), 0
                while True:
                    tries += 1
                    faces = b.post("/v1/identify", files={"image": probe}).json()["faces"]
                    if faces and faces[0]["name"] == person:
                        break
                latencies.append(time.perf_counter() - acknowledged)
                first_try += tries == 1
        ms = sorted(1000 * x for x in latencies)
        print(
            f"two tripletface serve, {len(ms)} ORL enrolments on one: found by identify on the "
            f"other {first_try}/{len(ms)} times in its first request after the acknowledgement; "
            f"acknowledgement to answer median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms "
            "(one identify request: detection and encoding included)"
        )
    finally:
        stop(first.process)
        stop(second.process)


def big_matrix(rows: int) -> np.ndarray:
    """rows x 128 clustered faces in a cached float32 file, memory-mapped."""
    path = args.cache / f"faces{rows}.f32"
    if not path.exists():
        args.cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        out = np.lib.format.open_memmap(tmp, "w+", np.float32, (rows, DIM))
        step = 100_000
        for start in range(0, rows, step * FACES_PER_PERSON):
            part = clustered(min(step, (rows - start) // FACES_PER_PERSON), seed=10_000 + start)
            out[start : start + len(part)] = part
        out.flush()
        del out
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def ivfpq_part() -> None:
    import resource

    import faiss

    from tripletface.search import PQ_BYTES, ExactIndex, FaissIndex

    print(f"## IVF-PQ at {args.big:,} faces")
    print(machine() + f"; FAISS builds on {faiss.omp_get_max_threads()} threads, searches on 1")
    matrix = big_matrix(args.big)
    rng = np.random.default_rng(7)
    chosen = rng.integers(0, args.big, args.probes)
    probes = matrix[chosen] + SPREAD * rng.standard_normal((args.probes, DIM)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    path = args.cache / f"faces{args.big}.faiss"
    if path.exists():
        build = grown = float("nan")  # built by an earlier run: its figures are in that output
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        index = FaissIndex(matrix, pq=PQ_BYTES)
        build = time.perf_counter() - started
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        index.save(path, {"gallery": "bench", "generation": 0})
        del index
    index, _ = FaissIndex.load(path)
    faiss.omp_set_num_threads(1)
    latencies, found = [], []
    for probe in probes:
        start = time.perf_counter()
        _, ids = index.search(probe[None], 17)
        latencies.append(time.perf_counter() - start)
        found.append(ids[0])
    found = np.array(found)
    exact = np.empty(args.probes, dtype=np.int64)
    for start in range(0, args.big, 1_000_000):
        part = np.asarray(matrix[start : start + 1_000_000])
        d, i = ExactIndex(part).search(probes, 1)
        if start == 0:
            best = d[:, 0].copy()
            exact[:] = i[:, 0]
        better = d[:, 0] < best
        best[better], exact[better] = d[better, 0], i[better, 0] + start
    candidates = matrix[np.sort(np.unique(found))]
    lookup = {int(f): row for row, f in enumerate(np.sort(np.unique(found)))}
    reranked = []
    for probe, ids in zip(probes, found, strict=True):
        rows = candidates[[lookup[int(i)] for i in ids]]
        reranked.append(ids[np.argmin(((rows - probe) ** 2).sum(1))])
    size = path.stat().st_size
    print(
        f"built in {build:.0f} s (peak memory of the build {grown:.0f} MB beyond the mapped "
        f"data); saved index {size / 1e6:.0f} MB = {size / args.big:.1f} bytes a face "
        f"({PQ_BYTES}-byte codes + 8-byte ids + cell centres)"
    )
    print(
        "search, 1 probe at a time on 1 thread: median "
        f"{1000 * statistics.median(latencies):.2f} ms over {args.probes} probes"
    )
    print(
        f"top-1 = exact search: {100 * (found[:, 0] == exact).mean():.1f}% raw, "
        f"{100 * (np.array(reranked) == exact).mean():.1f}% re-ranked by exact distance over "
        "17 candidates"
    )
    person = np.array(reranked) // FACES_PER_PERSON == exact // FACES_PER_PERSON
    print(f"same person as exact search's nearest face (what identify names): {person.mean():.1%}")


if args.import_into is not None:
    import_random(args.import_into, args.sizes[0])
else:
    for part in args.parts:
        parts = {"sqlite": sqlite_part, "serve": serve_part, "postgres": postgres_part}
        {**parts, "ivfpq": ivfpq_part}[part]()
