"""``tripletface synth`` through a subprocess: the files it writes, its exit codes and messages."""

import shlex
from functools import partial

import numpy as np
import pytest
from PIL import Image
from test_cli import run_cli as run_tripletface

from tripletface.cli import main
from tripletface.data.synthetic import SyntheticFaces

run_cli = partial(run_tripletface, "synth")


@pytest.mark.slow  # a fresh interpreter importing torch: seconds on a loaded machine
def test_writes_the_same_pictures_as_the_dataset(tmp_path):
    out = tmp_path / "faces"
    result = run_cli(
        str(out), *shlex.split("--persons 3 --images 2 --size 32 --seed 4 --first-person 20")
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 6 images of 3 persons" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["person_00020", "person_00021", "person_00022"]
    images = SyntheticFaces(3, 2, size=32, seed=4, first_person=20).tensors()[0]
    for i, path in enumerate(sorted(out.rglob("*.png"))):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert np.array_equal(pixels, images[i].permute(1, 2, 0).numpy())


@pytest.mark.slow
def test_a_non_empty_folder_needs_force(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    refused = run_cli(str(tmp_path), "--persons", "1", "--images", "1", "--size", "16")
    assert refused.returncode == 2
    assert "not empty" in refused.stderr and "Traceback" not in refused.stderr
    forced = main(
        ["synth", str(tmp_path), "--persons", "1", "--images", "1", "--size", "16", "--force"]
    )
    assert forced == 0
    assert len(list(tmp_path.rglob("*.png"))) == 1
    assert (tmp_path / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_zero_persons_exits_2_with_a_clear_message(tmp_path):
    result = run_cli(str(tmp_path / "out"), "--persons", "0")
    assert result.returncode == 2
    assert "argument --persons: must be at least 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "x"], "argument --images: 'x' is not an integer"),
        (["--size", "8"], "argument --size: must be at least 16, got 8"),
        (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
        (["--first-person", "-3"], "argument --first-person: must be at least 0, got -3"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        main(["synth", str(tmp_path / "out"), *args])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_output_path_under_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "faces"
    assert main(["synth", str(out), "--persons", "1", "--images", "1", "--size", "16"]) == 2
    assert capsys.readouterr().err == (
        f"tripletface: error: {out}: cannot create the folder (Not a directory); "
        "choose another output path\n"
    )
