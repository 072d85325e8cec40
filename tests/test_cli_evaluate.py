"""``tripletface evaluate`` end to end: through a subprocess, and in-process for the error paths."""

import json
from functools import partial

import pytest
import torch
from test_cli import run_cli as run_tripletface
from test_evaluate import REQUIRED, write_people

from tripletface.cli import main
from tripletface.models import create_encoder
from tripletface.models.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    encoder = create_encoder("compact", input_size=16, width=4, embedding_dim=16)
    return save_checkpoint(tmp_path_factory.mktemp("run") / "tiny.pt", encoder)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_people(tmp_path_factory.mktemp("data") / "people", persons=6, images=4)


run_cli = partial(run_tripletface, "evaluate")


@pytest.mark.slow
def test_json_and_plots_through_a_subprocess(data, checkpoint, tmp_path):
    result = run_cli(
        data, "--encoder", checkpoint, "--pairs-count", 60, "--folds", 5, "--json",
        "--plots", tmp_path / "plots",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)  # exactly one JSON object, nothing else on stdout
    assert figures.keys() >= REQUIRED
    assert (figures["pairs"], figures["same_pairs"], figures["probes"]) == (60, 30, 18)
    for key in ("verification_accuracy", "val_at_far_1e-3", "roc_auc", "eer", "rank1", "rank5"):
        assert 0 <= figures[key] <= 1, key
    for name in ("roc.png", "distances.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 10_000
    assert figures["plots"] == [str(tmp_path / "plots" / n) for n in ("roc.png", "distances.png")]


@pytest.mark.slow  # a fresh interpreter imports torch: seconds on a loaded machine
def test_a_bad_option_through_a_subprocess_is_a_usage_error(data):
    result = run_cli(data, "--encoder", "compact", "--pairs-count", "0")
    assert result.returncode == 2 and result.stdout == ""
    assert "--pairs-count: must be at least 2, got 0" in result.stderr


@pytest.mark.slow  # a fresh interpreter imports torch: seconds on a loaded machine
def test_a_missing_folder_exits_2_with_one_line(tmp_path, checkpoint):
    result = run_cli(tmp_path / "nowhere", "--encoder", checkpoint)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert (
        result.stderr.startswith("tripletface: error: ")
        and "nowhere: not a folder" in result.stderr
    )


def test_a_seeded_run_repeats_and_prints_a_summary(data, capsys):
    args = ["evaluate", str(data), "--encoder", "compact", "--pairs-count", "40", "--folds", "4"]
    assert main([*args, "--json", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--json", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first
    assert main(args) == 0
    summary = capsys.readouterr().out
    assert "rank-1" in summary and "VAL @ FAR=1e-3" in summary and "40 pairs" in summary


def test_an_lfw_pairs_file_is_used_in_file_order(data, checkpoint, tmp_path, capsys):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(
        "2\nPerson_0 1 2\nPerson_3 2 4\nPerson_1 1 Person_2 1\nPerson_4 3 Person_5 2\n"
    )
    argv = ["evaluate", str(data), "--encoder", str(checkpoint), "--pairs", str(pairs)]
    assert main([*argv, "--folds", "2", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (figures["pairs"], figures["same_pairs"], figures["pairs_file"]) == (4, 2, str(pairs))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pairs-count", "1"], "--pairs-count: must be at least 2"),
        (["--folds", "x"], "--folds: 'x' is not an integer"),
        (["--unseen-share", "1"], "--unseen-share: must lie in"),
    ],
)
def test_bad_options_are_usage_errors(data, extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(data), "--encoder", "compact", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_data_and_encoders_exit_2_naming_the_culprit(data, checkpoint, tmp_path, capsys):
    assert main(["evaluate", str(data), "--encoder", "no-such-net"]) == 2
    assert "unknown encoder 'no-such-net'" in capsys.readouterr().err
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\nPerson_0 1 2\nPerson_0 1 Person_1\n")
    assert main(["evaluate", str(data), "--encoder", str(checkpoint), "--pairs", str(pairs)]) == 2
    assert "pairs.txt line 3" in capsys.readouterr().err
    broken = write_people(tmp_path / "broken", persons=2, images=2)
    bad = broken / "Person_1" / "Person_1_0002.png"
    bad.write_bytes(b"not a png")
    argv = ["evaluate", str(broken), "--encoder", str(checkpoint), "--folds", "2"]
    assert main([*argv, "--strict"]) == 2
    assert f"{bad}: unreadable image" in capsys.readouterr().err
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.startswith("tripletface: warning: ") and str(bad) in err


def test_an_encoder_of_aligned_chips_sees_detected_faces_and_others_whole_images(tmp_path):
    from argparse import Namespace

    from test_chips import write_photos

    from tripletface.cli.evaluate import _dataset
    from tripletface.data.chips import AlignedFaces
    from tripletface.data.folders import FolderDataset

    write_photos(tmp_path, persons=2, per_person=2)
    args = Namespace(data=tmp_path, strict=False, face="similar")
    chips_encoder = create_encoder("compact", input_size=32, width=4)
    chips_encoder.chip_padding = 0.25
    faces = _dataset(args, chips_encoder)
    assert isinstance(faces, AlignedFaces) and faces.chips.shape[1:] == (3, 32, 32)
    assert faces.padding == 0.25 and len(faces) == 4
    assert isinstance(_dataset(args, create_encoder("compact", input_size=32)), FolderDataset)


def test_a_simulated_camera_changes_every_photo_or_only_the_probes():
    from argparse import Namespace

    from tripletface.cli.evaluate import _through_camera
    from tripletface.data.chips import ChipSet, in_condition

    chips = ChipSet(
        torch.randint(0, 256, (4, 3, 30, 30), dtype=torch.uint8), [0, 0, 1, 1], ["a", "b"], "wxyz"
    )
    encoder = create_encoder("compact", input_size=30, width=4)
    encoder.chip_padding = 0.25
    masked = in_condition(chips, "mask", 3, 0.25).chips
    args = Namespace(condition="mask", seed=3, enroll_clean=False)
    seen, probes = _through_camera(args, chips, encoder)
    assert probes is None and torch.equal(seen.chips, masked) and seen.labels == chips.labels
    gallery, probes = _through_camera(
        Namespace(condition="mask", seed=3, enroll_clean=True), chips, encoder
    )
    assert gallery is chips and torch.equal(probes.chips, masked)
    assert _through_camera(Namespace(condition=None, enroll_clean=False), chips, encoder) == (
        chips,
        None,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--enroll-clean"], "--enroll-clean needs --condition"),
        (["--condition", "fog"], "unknown camera condition 'fog': use one of low-resolution, mask"),
        (["--condition", "mask"], "takes whole images: use an encoder of face chips"),
    ],
)
def test_camera_options_that_cannot_work_exit_2(data, checkpoint, extra, message, capsys):
    assert main(["evaluate", str(data), "--encoder", str(checkpoint), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_dlib_resnet_through_a_masked_camera_with_clean_photos_enrolled(tmp_path, capsys):
    from test_chips import write_photos

    write_photos(tmp_path, persons=2, per_person=3)
    argv = ["evaluate", str(tmp_path), "--encoder", "dlib-resnet", "--folds", "2", "--json"]
    runs = {}
    for name, extra in {
        "clean": [],
        "masked": ["--condition", "mask"],
        "enrolled clean": ["--condition", "mask", "--enroll-clean"],
    }.items():
        assert main([*argv, *extra]) == 0, name
        runs[name] = json.loads(capsys.readouterr().out)
    assert (runs["masked"]["condition"], runs["masked"]["enrolled_clean"]) == ("mask", False)
    assert runs["enrolled clean"]["enrolled_clean"] is True
    assert runs["clean"]["condition"] is None
    assert len({run["threshold"] for run in runs.values()}) == 3
    from tripletface.cli.evaluate import _summary

    assert _summary(runs["enrolled clean"], 2).startswith(
        "camera: mask (simulated; first photos enrolled as they are)\nverification: "
    )
    assert _summary(runs["clean"], 2).startswith("verification: ")
