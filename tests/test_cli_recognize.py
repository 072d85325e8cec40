"""The recognition subcommands through a real tripletface process: output and exit codes.

Photos come from scikit-image (see test_recognize.make_photos). ``--detector hog`` keeps the
CNN fallback, which costs seconds on the photo without a face, out of the tests.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_recognize import make_photos

from tripletface.gallery import Gallery

# Root may write to read-only files; this makes os.access answer as for any other user, so that
# the gallery sees a read-only file as read-only.
AS_A_USER = """import os, sys
real = os.access
def access(path, mode, *args, **kwargs):
    if mode & os.W_OK and not os.stat(path).st_mode & 0o222:
        return False
    return real(path, mode, *args, **kwargs)
os.access = access
from tripletface.cli import main
sys.exit(main(sys.argv[1:]))
"""


def tf(gallery: Path, *args: str, workers: int = 1) -> subprocess.CompletedProcess:
    """Run one tripletface command on a gallery (HOG detection only, one worker by default)."""
    program = ["-c", AS_A_USER] if os.geteuid() == 0 else ["-m", "tripletface"]
    options = ["--gallery", str(gallery), "--detector", "hog", "--workers", str(workers)]
    return subprocess.run(
        [sys.executable, *program, *args, *options], capture_output=True, text=True, timeout=180
    )


def one_error_line(result: subprocess.CompletedProcess, *words: str) -> str:
    """The single error line of a failed command, checked to contain every word."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("tripletface: error")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, pixels in make_photos().items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(pixels).save(paths[name])
    paths["text"] = folder / "notes.png"
    paths["text"].write_text("a shopping list, not a photo")
    return paths


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, files) -> Path:
    gallery = tmp_path_factory.mktemp("gallery") / "people.db"
    result = tf(gallery, "enroll", "eileen", str(files["face"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"enrolled eileen from {files['face']}"
    return gallery


@pytest.mark.slow
def test_identify_a_folder_as_json_and_annotated(enrolled, files, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("mirrored", "two", "none"):
        (folder / f"{name}.png").symlink_to(files[name])
    Image.open(files["mirrored"]).save(folder / "mirrored.jpg", quality=95)
    result = tf(enrolled, "identify", str(folder), "--json", "--annotate", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    report = {Path(item["file"]).name: item["faces"] for item in json.loads(result.stdout)}
    assert list(report) == ["mirrored.jpg", "mirrored.png", "none.png", "two.png"]
    assert report["none.png"] == []
    assert [face["name"] for face in report["two.png"]] == ["eileen", "eileen"]
    [face] = report["mirrored.png"]
    assert set(face) == {"box", "name", "distance", "confidence"} and len(face["box"]) == 4
    # a.jpg and a.png each get a copy; none lands on or among the photos themselves.
    copies = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert copies == ["mirrored.jpg.png", "mirrored.png", "none.png", "two.png"]
    for out in (folder, folder / "annotated", tmp_path / "out" / "none.png"):
        result = tf(enrolled, "identify", str(folder), "--annotate", str(out))
        one_error_line(result, f"--annotate {out}")
    assert sorted(p.name for p in folder.iterdir()) == list(report)
    in_workers = tf(enrolled, "identify", str(folder), "--json", workers=2)
    faces = [item["faces"] for item in json.loads(in_workers.stdout)]
    assert [[(f["box"], f["name"]) for f in fs] for fs in faces] == [
        [(f["box"], f["name"]) for f in fs] for fs in report.values()
    ]


@pytest.mark.slow
def test_verify_and_people_exit_codes(enrolled, files):
    same = tf(enrolled, "verify", str(files["mirrored"]), "eileen")
    assert same.returncode == 0 and same.stdout.startswith("same"), same.stderr
    strict = tf(enrolled, "verify", str(files["mirrored"]), "eileen", "--threshold", "1e-9")
    assert strict.returncode == 1 and strict.stdout.startswith("different")
    listing = tf(enrolled, "people", "--json")
    assert json.loads(listing.stdout) == [{"name": "eileen", "faces": 1}]


@pytest.mark.slow
def test_enroll_remove_and_bad_photos(files, tmp_path):
    gallery = tmp_path / "g.db"
    one_error_line(tf(gallery, "enroll", "x", str(files["face"]), str(files["text"])), "notes.png")
    assert not gallery.exists()  # all or nothing: not even an empty gallery is left behind
    one_error_line(tf(gallery, "enroll", "x", str(files["none"])), "none.png", "no face")
    one_error_line(tf(gallery, "enroll", "x", str(files["two"])), "two.png", "--largest")
    assert tf(gallery, "enroll", "x", str(files["two"]), "--largest").returncode == 0
    one_error_line(tf(gallery, "verify", str(files["face"]), "nobody"), "'nobody'")
    removed = tf(gallery, "remove", "x")
    assert removed.returncode == 0 and "removed x (1 faces)" in removed.stdout
    # Every command closed the gallery: SQLite's write-ahead log was folded in and removed.
    assert not Path(f"{gallery}-wal").exists() and not Path(f"{gallery}-shm").exists()
    one_error_line(tf(tmp_path / "typo.db", "remove", "x"), "typo.db", "no gallery")
    assert not (tmp_path / "typo.db").exists()


@pytest.fixture(scope="module")
def dlib_version() -> str:
    from tripletface import load_encoder

    return load_encoder("dlib-resnet").fingerprint()


def gallery_of(path: Path, version: str, faces: int = 0, encoder: str = "dlib-resnet") -> Path:
    """A gallery file made directly, holding ``faces`` random unit-length embeddings."""
    with Gallery(path, encoder, version, 128) as gallery:
        if faces:
            rows = np.random.default_rng(0).normal(size=(faces, 128))
            gallery.add_faces("x", rows / np.linalg.norm(rows, axis=1, keepdims=True))
    return path


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path, dlib_version):
    gallery = gallery_of(tmp_path / "g.db", dlib_version, faces=3)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written, like `| head` done early
    program = [sys.executable, "-m", "tripletface", "people", "--gallery", str(gallery)]
    with os.fdopen(write, "w") as stdout:
        result = subprocess.run(program, stdout=stdout, stderr=subprocess.PIPE, timeout=120)
    assert result.returncode == 128 + signal.SIGPIPE and result.stderr == b""


@pytest.mark.slow
def test_unusable_galleries_are_refused_untouched(files, tmp_path, dlib_version):
    face = str(files["face"])
    one_error_line(tf(tmp_path / "new.db", "identify", face), "new.db", "no gallery")
    assert not (tmp_path / "new.db").exists()
    empty = gallery_of(tmp_path / "empty.db", dlib_version)
    one_error_line(tf(empty, "identify", face), "empty.db", "empty")
    other = gallery_of(tmp_path / "other.db", "0123456789abcdef", faces=1, encoder="compact")
    one_error_line(tf(other, "identify", face), "other.db", "--encoder compact")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    before = corrupt.read_bytes()
    one_error_line(tf(corrupt, "enroll", "y", face), "corrupt.db")
    assert corrupt.read_bytes() == before
    locked = gallery_of(tmp_path / "locked.db", dlib_version, faces=1)
    locked.chmod(0o444)
    before = locked.read_bytes()
    one_error_line(tf(locked, "enroll", "y", face), "locked.db", "read-only")
    reading = tf(locked, "identify", face)  # reading still works: no match for a random face
    assert reading.returncode == 1 and "unknown" in reading.stdout, reading.stderr
    assert locked.read_bytes() == before


@pytest.mark.slow
def test_enroll_dir_cluster_and_calibrate(files, tmp_path):
    people = tmp_path / "people"
    for person, names in {"eileen": ("face", "mirrored"), "mixed": ("two", "text")}.items():
        (people / person).mkdir(parents=True)
        for name in names:
            (people / person / files[name].name).symlink_to(files[name])
    gallery = tmp_path / "g.db"
    result = tf(gallery, "enroll-dir", str(people), workers=2)
    assert result.returncode == 2  # notes.png and two.png could not be enrolled
    assert "skipped" in result.stderr and "notes.png" in result.stderr
    with sqlite3.connect(gallery) as db:
        assert db.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == 2

    links = tmp_path / "links"
    clusters = tf(gallery, "cluster", str(people), "--links", str(links), workers=2)
    report = json.loads(clusters.stdout)
    assert [len(group) for group in report["clusters"]] == [4]
    assert [Path(e["file"]).name for e in report["errors"]] == ["notes.png"]
    assert len(list((links / "person_000").iterdir())) == 4
    # A second run replaces the first one's links, and refuses a folder holding other files.
    again = tf(gallery, "cluster", str(people / "eileen"), "--links", str(links))
    assert again.returncode == 0, again.stderr
    linked = sorted(path.readlink() for path in (links / "person_000").iterdir())
    eileen = [(people / "eileen" / files[name].name).resolve() for name in ("face", "mirrored")]
    assert linked == sorted(eileen)
    (links / "person_000" / "notes.txt").write_text("mine")
    one_error_line(tf(gallery, "cluster", str(people), "--links", str(links)), "notes.txt")

    calibrated = tf(gallery, "calibrate", str(people), "--far", "0.5")
    assert calibrated.returncode == 2 and "notes.png" in calibrated.stderr  # stored, yet told
    (people / "mixed" / "notes.png").unlink()
    calibrated = tf(gallery, "calibrate", str(people), "--far", "0.5")
    assert calibrated.returncode == 0, calibrated.stderr
    with sqlite3.connect(gallery) as db:
        stored = db.execute("SELECT threshold FROM meta").fetchone()[0]
    assert f"threshold {stored:.4f}" in calibrated.stdout


@pytest.mark.slow
def test_enroll_dir_skips_photos_enrolled_as_someone_else_and_enrolls_the_rest(files, tmp_path):
    people = tmp_path / "people"
    for person, name in (("ada", "face"), ("bob", "face"), ("carl", "mirrored"), ("dan", "face")):
        (people / person).mkdir(parents=True)
        (people / person / files[name].name).write_bytes(files[name].read_bytes())
    gallery = tmp_path / "g.db"
    result = tf(gallery, "enroll-dir", str(people), workers=2)
    assert result.returncode == 2, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert len(warnings) == 2, result.stderr
    for person, line in zip(("bob", "dan"), warnings, strict=True):
        assert f"{people / person / 'face.png'}: this photo is already enrolled as 'ada'" in line
    assert result.stdout.strip() == (
        f"enrolled 2 new faces of 4 people from {people}; "
        "2 skipped (2 already enrolled as someone else)"
    )
    with sqlite3.connect(gallery) as db:
        rows = db.execute(
            "SELECT persons.name, faces.source FROM faces JOIN persons ON persons.id = person_id"
        ).fetchall()
    assert sorted(rows) == [
        ("ada", str(people / "ada" / "face.png")),
        ("carl", str(people / "carl" / "mirrored.png")),
    ]


# Runs one command and says on the last line of stderr whether it imported torch.
REPORTS_TORCH = """import sys
from tripletface.cli import main
code = main(sys.argv[1:])
print("torch imported" if "torch" in sys.modules else "no torch", file=sys.stderr)
sys.exit(code)
"""


def tf_reporting_torch(gallery: Path, *args: str) -> tuple[subprocess.CompletedProcess, bool]:
    """(result, whether torch was imported) of one tripletface command on a gallery."""
    options = ["--gallery", str(gallery), "--detector", "hog", "--workers", "2"]
    result = subprocess.run(
        [sys.executable, "-c", REPORTS_TORCH, *args, *options],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return result, result.stderr.splitlines()[-1] == "torch imported"


@pytest.mark.slow
def test_commands_that_only_use_the_encoder_import_no_torch_and_torch_agrees(files, tmp_path):
    people = tmp_path / "people"
    (people / "eileen").mkdir(parents=True)
    for name in ("face", "mirrored"):
        (people / "eileen" / files[name].name).symlink_to(files[name])
    (people / "other").mkdir()
    (people / "other" / "two.png").symlink_to(files["two"])
    gallery = tmp_path / "g.db"
    # The first command exports (and quantises) the encoder into the cache, that time with torch.
    first, _ = tf_reporting_torch(gallery, "enroll", "eileen", str(files["face"]))
    assert first.returncode == 0, first.stderr
    commands = [
        ("enroll", "eileen", str(files["face"])),
        ("enroll-dir", str(people)),
        ("identify", str(files["mirrored"])),
        ("identify", str(people / "eileen")),
        ("verify", str(files["mirrored"]), "eileen"),
        ("people",),
        ("cluster", str(people)),
        ("calibrate", str(people), "--far", "0.5"),
    ]
    for command in commands:
        result, torch_imported = tf_reporting_torch(gallery, *command)
        assert result.returncode in (0, 2), f"{command}: {result.stderr}"  # 2: two.png skipped
        assert not torch_imported, command
    # One gallery for every runtime: float32 onnx and torch embeddings agree within 1e-4 (a
    # squared distance of 1e-5 at most), int8 ones (the default) come close. The threshold is
    # given: calibrate stored one measured on three faces.
    distances = {}
    for runtime in ("onnx", "torch", "onnx-int8"):
        result, torch_imported = tf_reporting_torch(
            gallery,
            "identify",
            str(files["face"]),
            "--json",
            "--runtime",
            runtime,
            "--threshold",
            "0.1",
        )
        assert result.returncode == 0 and torch_imported == (runtime == "torch"), result.stderr
        (match,) = json.loads(result.stdout)[0]["faces"]
        assert match["name"] == "eileen"
        distances[runtime] = match["distance"]
    assert abs(distances["onnx"] - distances["torch"]) <= 1e-5
    assert distances["onnx-int8"] <= 1e-5 and distances["onnx"] < 0.03
