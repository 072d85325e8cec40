"""`tripletface train`: a run on synthetic faces and on a folder, resuming, and bad arguments."""

import json

import numpy as np
import pytest
from PIL import Image
from test_cli import run_cli

from tripletface.cli import main
from tripletface.models import load_encoder
from tripletface.models.checkpoint import load_checkpoint

TINY = ["--size", "24", "--p", "4", "--k", "2", "--threads", "1", "--quiet"]


@pytest.mark.slow  # a fresh interpreter importing torch: seconds on a loaded machine
def test_trains_on_synthetic_faces_and_prints_json(tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "synthetic:10x3", "--out", str(run), "--steps", "3", "--json", *TINY)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["step"] == 3 and summary["config"]["strategy"] == "semihard"
    assert summary["config"]["augment"] is False
    assert (run / "metrics.csv").read_text().count("\n") == 4
    assert load_encoder(run / "last.pt").input_size == (24, 24)
    assert summary["plot"] == str(run / "training.png")
    assert (run / "training.png").read_bytes().startswith(b"\x89PNG")
    assert summary["triplets"] == str(run / "triplets.png")
    assert (run / "triplets.png").read_bytes().startswith(b"\x89PNG")


def test_resume_continues_with_the_checkpoint_settings(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert (
        main(["train", "synthetic:10x3", "--out", run, "--steps", "2", "--lr", "0.01", *TINY]) == 0
    )
    assert (
        main(["train", "synthetic:10x3", "--out", run, "--resume", "--steps", "4", "--quiet"]) == 0
    )
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["step"] == 4 and state["config"]["lr"] == 0.01 and state["config"]["p"] == 4
    said = capsys.readouterr().out
    assert "trained 4 steps" in said and said.count("triplets chosen") == 1
    # A new run into it would overwrite the trained weights: only with --force.
    before = (tmp_path / "run" / "last.pt").read_bytes()
    again = ["train", "synthetic:10x3", "--out", run, "--steps", "1", *TINY]
    assert main(again) == 2
    assert "holds a run already" in capsys.readouterr().err.splitlines()[-1]
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    assert main([*again, "--force"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1


def test_trains_on_a_folder_per_person_with_augmentation(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for person in range(4):
        folder = tmp_path / "faces" / f"person{person}"
        folder.mkdir(parents=True)
        for picture in range(3):
            pixels = rng.integers(0, 256, (30 + picture, 28, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{picture}.png")
    run = tmp_path / "run"
    args = ["train", str(tmp_path / "faces"), "--out", str(run), "--steps", "2", "--json"]
    assert main([*args, *TINY]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and summary["config"]["augment"] is True


def test_resume_continues_the_run_folder_where_it_is_now(tmp_path):
    first, moved = tmp_path / "a", tmp_path / "b"
    assert main(["train", "synthetic:8x4", "--out", str(first), "--steps", "2", *TINY]) == 0
    first.rename(moved)
    args = ["train", "synthetic:8x4", "--out", str(moved), "--resume", "--steps", "3", "--quiet"]
    assert main(args) == 0
    assert load_checkpoint(moved / "last.pt")["step"] == 3
    assert load_checkpoint(moved / "last.pt")["config"]["out"] == str(moved)
    assert not first.exists()


@pytest.mark.parametrize(
    "length, message",
    [
        (["--steps", "2"], "last.pt is at step 2 already: give --steps above 2"),
        ([], "last.pt is at step 2 already: give --steps above 2"),
        (["--epochs", "1"], "at step 2 already and --epochs 1 ends at step 1: give more --epochs"),
    ],
)
def test_resuming_a_run_at_its_end_already_is_refused(tmp_path, capsys, length, message):
    run = tmp_path / "run"
    # 4 persons of 2 images are one P x K batch: an epoch is one step.
    assert main(["train", "synthetic:4x2", "--out", str(run), "--steps", "2", *TINY]) == 0
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    capsys.readouterr()
    args = ["train", "synthetic:4x2", "--out", str(run), "--resume", "--json", "--quiet"]
    assert main([*args, *length]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tripletface: error: ") and err.count("\n") == 1 and message in err
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before


def test_negative_workers_are_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "synthetic:4x2", "--out", str(tmp_path / "run"), "--workers", "-1"])
    assert stop.value.code == 2
    assert "argument --workers: must be at least 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["afile", "afile/sub"])
def test_an_out_that_cannot_be_a_folder_is_named(tmp_path, capsys, out):
    (tmp_path / "afile").touch()
    args = ["train", "synthetic:4x2", "--out", str(tmp_path / out), "--steps", "1", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tripletface: error: --out {tmp_path / out}: cannot write there (")
    assert err.count("\n") == 1 and (tmp_path / "afile").read_bytes() == b""


@pytest.mark.parametrize(
    "args, message",
    [
        (["synthetic:10x3", "--p", "1"], "p = 1"),
        (["synthetic:10x3", "--strategy", "hardest"], "hardest"),
        (["no/such/folder"], "no/such/folder"),
        (["synthetic:lots"], "synthetic:lots"),
        (["synthetic:10x3", "--encoder", "nonet"], "nonet"),
        (["synthetic:10x3", "--resume"], "last.pt"),
        (
            ["synthetic:4x2", "--encoder", "dlib-resnet", "--size", "40"],
            "size = 40: encoder dlib-resnet takes 150 x 150 images only; drop --size",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "runs" / "run"
    assert main(["train", *args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tripletface: error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "runs").exists()  # a refused run leaves no empty RUN/ behind


@pytest.mark.slow
def test_bad_arguments_through_the_command_line(tmp_path):
    result = run_cli("train", "synthetic", "--out", str(tmp_path / "run"), "--p", "0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "p = 0" in result.stderr
    both = run_cli("train", "synthetic", "--out", str(tmp_path), "--steps", "3", "--epochs", "1")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert not (tmp_path / "run").exists()
