"""FaceStream and ChipMaker: the same faces in worker processes as in this one, workers that
start before anyone iterates, and a module that stays free of torch."""

import hashlib
import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_recognize import make_photos

from tripletface.errors import InputError
from tripletface.faces.extract import ChipMaker, FaceStream, faces_of_file, file_hash

HOG_CHIPS = ChipMaker("hog", 150, 0.25)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[str]:
    """Photos with one, two and no face, and a text file named like an image, in that order."""
    folder = tmp_path_factory.mktemp("photos")
    photos = make_photos()
    paths = []
    for name in ("face", "two", "none"):
        paths.append(str(folder / f"{name}.png"))
        Image.fromarray(photos[name]).save(paths[-1])
    paths.append(str(folder / "notes.png"))
    (folder / "notes.png").write_text("a shopping list, not a photo")
    return paths


def test_workers_give_the_faces_of_this_process_in_order(paths):
    with FaceStream(HOG_CHIPS, paths, workers=2) as stream:
        assert stream.parallel
        parallel = list(stream)
    serial = list(FaceStream(HOG_CHIPS, paths, workers=1))
    assert [item.path for item in parallel] == [item.path for item in serial] == paths
    assert [len(item.boxes) for item in parallel[:3]] == [1, 2, 0]
    for ours, theirs in zip(parallel[:3], serial[:3], strict=True):
        assert ours.boxes == theirs.boxes and ours.digest == theirs.digest
        assert len(ours.chips) == len(ours.boxes) and ours.error is None
        np.testing.assert_array_equal(ours.chips, theirs.chips)
    bad = parallel[3]
    assert isinstance(bad.error, InputError) and "notes.png" in str(bad.error)
    assert bad.boxes == [] and bad.chips is None


def test_workers_start_at_construction_and_stop_on_close(paths):
    stream = FaceStream(HOG_CHIPS, paths, workers=2)
    try:
        assert len(mp.active_children()) == 2  # before anyone asked for a face
    finally:
        stream.close()
    assert mp.active_children() == []
    assert list(stream) == [] and not stream.detecting


def test_leaving_the_context_early_stops_the_workers(paths):
    with FaceStream(HOG_CHIPS, paths * 5, workers=2) as stream:
        first = next(iter(stream))
    assert first.path == paths[0] and mp.active_children() == []


def test_one_worker_or_one_file_runs_in_this_process(paths):
    for stream in (FaceStream(HOG_CHIPS, paths, workers=1), FaceStream(HOG_CHIPS, paths[:1])):
        assert not stream.parallel and not stream.detecting
        assert mp.active_children() == []
        assert len(list(stream)) == len(stream)


def test_whole_image_encoders_get_the_resized_image_whatever_the_detector(paths):
    maker = ChipMaker.for_encoder("auto", 64, None)
    assert maker.detector is None
    whole = faces_of_file(maker, paths[2])
    width, height = Image.open(paths[2]).size
    assert whole.boxes == [(0, 0, width, height)] and whole.chips.shape == (1, 64, 64, 3)
    assert ChipMaker.for_encoder("cnn", 150, 0.25) == ChipMaker("cnn", 150, 0.25)


def test_file_hash_is_the_sha256_of_the_bytes(paths):
    with open(paths[0], "rb") as handle:
        assert file_hash(paths[0]) == hashlib.sha256(handle.read()).hexdigest()


def test_detection_and_the_registry_do_not_import_torch():
    # The CLI forks its detection workers before torch is imported: a second saved per command.
    modules = "tripletface.faces.extract, tripletface.models, tripletface.cli.recognize"
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
