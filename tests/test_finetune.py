"""Fine-tuning mechanics: frozen stages stay put, the rest moves, the set-up survives a resume.

The photos are one face (scikit-image's astronaut) in several variants, so nothing here measures
recognition; bench/orl_finetune.py does, on real identities.
"""

import json
import shlex
import shutil
from dataclasses import replace

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from test_chips import CountingDetector, write_photos

from tripletface.cli import main
from tripletface.data.chips import CameraDraws, ChipSet, in_condition
from tripletface.errors import InputError
from tripletface.finetune import (
    CAMERA_DISTILL,
    CAMERA_LR,
    CAMERA_TOLERANCE,
    FINETUNE_LR,
    aligned_faces,
    finetune_setup,
    frozen_prefixes,
    has_pretrained_weights,
    pretrained_encoder,
)
from tripletface.models import load_encoder
from tripletface.models.compact import CompactNet
from tripletface.models.dlib_resnet import DlibResNet
from tripletface.train import TrainConfig, fit


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    """Aligned 150 x 150 chips of 2 'persons' x 3 photos."""
    root = tmp_path_factory.mktemp("photos")
    write_photos(root)
    return aligned_faces(root, "dlib-resnet", detector=CountingDetector())


def test_frozen_prefixes_name_exactly_the_frozen_parameters():
    model = DlibResNet()
    assert frozen_prefixes(model.freeze(0)) == []
    assert frozen_prefixes(model.freeze(2)) == ["stem.", "stages.0.", "stages.1."]
    for stages in range(6):
        prefixes = frozen_prefixes(model.freeze(stages))
        for name, parameter in model.named_parameters():
            covered = any(name.startswith(prefix) for prefix in prefixes)
            assert covered == (not parameter.requires_grad), (stages, name)


def test_only_encoders_with_weights_can_be_pretrained():
    assert has_pretrained_weights("dlib-resnet") and not has_pretrained_weights("compact")
    with pytest.raises(InputError, match="no pretrained weights"):
        pretrained_encoder("compact")


def test_aligned_faces_follow_the_encoders_chip_convention(chips):
    assert chips.chips.shape == (6, 3, 150, 150) and chips.padding == DlibResNet.chip_padding
    assert chips.no_face == [] and chips.classes == ["p0", "p1"]
    small = aligned_faces(chips.root, "compact", detector=CountingDetector(), padding=0.3)
    assert small.chips.shape[2:] == CompactNet.input_size and small.padding == 0.3
    with pytest.raises(InputError, match="whole images"):
        aligned_faces(chips.root, "compact", detector=CountingDetector())


# One face in all photos: the 'persons' coincide and fit may warn that they collapsed.
@pytest.mark.filterwarnings("ignore:embeddings collapsed:RuntimeWarning")
@pytest.mark.slow  # loads dlib's weights and trains a few steps of a ResNet: ~10 s on 2 cores
def test_finetuning_moves_the_unfrozen_layers_only_and_resumes(chips, tmp_path):
    base = TrainConfig(
        encoder="dlib-resnet",
        p=2,
        k=2,
        steps=2,
        strategy="all",
        margin=1.0,
        schedule="constant",
        threads=1,
    )
    config, encoder = finetune_setup(base, freeze=4)
    assert config.lr == FINETUNE_LR and finetune_setup(base, lr=3e-5)[0].lr == 3e-5
    camera = finetune_setup(replace(base, condition="mask"))[0]
    assert camera.lr == CAMERA_LR != FINETUNE_LR and camera.distill == CAMERA_DISTILL
    assert finetune_setup(replace(base, condition="mask"), distill=0)[0].distill == 0
    assert finetune_setup(replace(base, distill=0.5))[0].distill == 0.5
    assert config.freeze == sorted(["stem.", "stages.0.", "stages.1.", "stages.2.", "stages.3."])
    assert config.encoder_kwargs == {"normalize": True} and encoder.normalized
    pretrained = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    reference = load_encoder("dlib-resnet", normalize=True)
    assert all(torch.equal(p, pretrained[n]) for n, p in reference.named_parameters())

    config.out = str(tmp_path / "run")
    result = fit(config, chips, encoder, progress=False)
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    assert result.history[0]["loss"] > 0
    trained = dict(result.encoder.named_parameters())
    for name, parameter in trained.items():
        frozen = any(name.startswith(prefix) for prefix in config.freeze)
        assert torch.equal(parameter, pretrained[name]) == frozen, name

    # The checkpoint alone rebuilds the normalised encoder and its frozen stages.
    saved = load_encoder(result.checkpoint)
    assert isinstance(saved, DlibResNet) and saved.normalized
    config.steps = 3
    resumed = fit(config, chips, resume=True, progress=False)
    assert resumed.step == 3
    for name, parameter in resumed.encoder.named_parameters():
        if any(name.startswith(prefix) for prefix in config.freeze):
            assert torch.equal(parameter, pretrained[name]), name
    assert not torch.equal(resumed.encoder.head.weight, trained["head.weight"])


@pytest.mark.slow  # detects faces and trains dlib-resnet through the CLI twice: ~15 s
def test_cli_fine_tunes_a_photo_folder_and_resumes_from_the_cache(chips, tmp_path, capsys):
    root = tmp_path / "photos"
    shutil.copytree(chips.root, root)
    Image.fromarray(skimage.data.coffee()[::4, ::4]).save(root / "p0" / "cup.png")
    run = tmp_path / "run"
    args = ["train", str(root), "--out", str(run), "--encoder", "dlib-resnet", "--pretrained"]
    args += shlex.split(
        "--freeze 5 --steps 1 --p 2 --k 2 --strategy all --threads 1 --quiet --json"
    )
    with pytest.warns(UserWarning, match="1 photo.* without a face"):
        assert main(args) == 0
    out = capsys.readouterr()
    config = json.loads(out.out.splitlines()[-1])["config"]
    assert config["lr"] == FINETUNE_LR and config["freeze"] == ["stages.", "stem."]
    assert config["strategy"] == "all" and config["encoder_kwargs"] == {"normalize": True}
    assert "6 face chips of 2 persons" in out.err and "1 photos without a face" in out.err
    assert (run / "faces.npz").is_file()
    saved = load_encoder(run / "last.pt")
    assert isinstance(saved, DlibResNet) and saved.normalized

    again = ["train", str(root), "--out", str(run), "--resume", "--steps", "2", "--quiet", "--json"]
    with pytest.warns(UserWarning, match="without a face"):
        assert main(again) == 0
    out = capsys.readouterr()
    assert json.loads(out.out.splitlines()[-1])["step"] == 2
    assert "7 from the cache, 0 examined" in out.err


def test_cli_refuses_freeze_without_pretrained_and_pretrained_without_weights(tmp_path, capsys):
    assert main(["train", "synthetic:4x2", "--out", str(tmp_path), "--freeze", "2"]) == 2
    assert "add --pretrained" in capsys.readouterr().err
    assert main(["train", "synthetic:4x2", "--out", str(tmp_path), "--pretrained"]) == 2
    assert "no pretrained weights" in capsys.readouterr().err


def small_chipset(persons: int = 4, per_person: int = 4, size: int = 32, seed: int = 0):
    """Random images of a few 'persons' (each a noisy copy of its own pattern)."""
    from tripletface.data.chips import ChipSet

    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (persons, 3, size, size), generator=g)
    noise = torch.randint(-20, 21, (persons, per_person, 3, size, size), generator=g)
    images = (base[:, None] + noise).clamp(0, 255).to(torch.uint8).flatten(0, 1)
    labels = [p for p in range(persons) for _ in range(per_person)]
    return ChipSet(images, labels, [f"p{p}" for p in range(persons)], [""] * len(labels))


def _moved(model, start) -> float:
    return sum(float((p.detach() - start[n]).abs().sum()) for n, p in model.named_parameters())


def test_finetune_pulls_toward_the_start_and_keeps_the_best_weights():
    from tripletface.finetune import finetune

    train, held = small_chipset(), small_chipset(3, 3, seed=1)
    # Batch-hard triplets with a wide margin: every step has a loss, so every step moves.
    config = TrainConfig(
        encoder="compact", p=2, k=2, steps=6, lr=1e-2, seed=0, strategy="hard", margin=2.0
    )

    def fresh():
        torch.manual_seed(0)
        return CompactNet(input_size=32, width=8)

    free, pulled = fresh(), fresh()
    start = {n: p.detach().clone() for n, p in free.named_parameters()}
    finetune(config, train, free)
    finetune(config, train, pulled, pull=0.5)
    assert 0 < _moved(pulled, start) < 0.8 * _moved(free, start)

    # A score that only falls: early stopping keeps the starting weights and stops early.
    falling = iter(range(100, 0, -1))
    model = fresh()
    result = finetune(
        config, train, model, held, every=1, patience=2, score=lambda e, c: next(falling)
    )
    assert result.best_step == 0 and result.run.step == 2 and _moved(model, start) == 0
    assert [step for step, _ in result.scores] == [0, 1, 2]
    # A score that only rises: the last weights are kept.
    rising = iter(range(100))
    model = fresh()
    result = finetune(
        config, train, model, held, every=4, patience=1, score=lambda e, c: next(rising)
    )
    assert result.best_step == 6 and [s for s, _ in result.scores] == [0, 4, 6]
    assert _moved(model, start) > 0
    with pytest.raises(InputError, match="pull"):
        finetune(config, train, fresh(), pull=1.0)


def test_held_apart_score_is_the_tar_over_all_pairs():
    from tripletface import metrics
    from tripletface.finetune import held_apart_score

    held = small_chipset(3, 3)
    torch.manual_seed(0)
    model = CompactNet(input_size=32, width=8)
    x = torch.nn.functional.normalize(model.embed(held.chips).double(), dim=1).numpy()
    distances, same = [], []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            distances.append(((x[i] - x[j]) ** 2).sum())
            same.append(held.labels[i] == held.labels[j])
    expected, _ = metrics.val_at_far(np.array(distances), np.array(same), 0.1)
    assert held_apart_score(model, held, far=0.1) == pytest.approx(expected)


def test_held_apart_persons_are_drawn_by_the_seed_and_leave_persons_to_train():
    from tripletface.finetune import held_apart_persons

    chips = small_chipset(persons=6)
    held = held_apart_persons(chips, 2, seed=4)
    assert len(held) == 2 and set(held) <= set(chips.classes)
    assert held == held_apart_persons(chips, 2, seed=4)
    assert len({tuple(held_apart_persons(chips, 2, seed)) for seed in range(8)}) > 1
    for count in (1, 5):
        with pytest.raises(InputError, match=f"cannot hold {count} of 6 persons apart"):
            held_apart_persons(chips, count, seed=0)


def test_guarded_score_refuses_weights_that_forget_the_clean_chips():
    from tripletface.finetune import guarded_score, held_apart_score

    clean, changed = small_chipset(3, 3), small_chipset(3, 3, seed=2)
    torch.manual_seed(0)
    model = CompactNet(input_size=32, width=8)
    on_clean = held_apart_score(model, clean, far=0.1)
    expected = held_apart_score(model, changed, far=0.1)
    assert guarded_score(model, changed, clean, on_clean, far=0.1) == expected
    assert guarded_score(model, changed, clean, on_clean + 1e-9, far=0.1) == -np.inf


@pytest.mark.filterwarnings("ignore:embeddings collapsed:RuntimeWarning")
def test_finetune_chips_trains_on_both_versions_toward_the_clean_embeddings(monkeypatch):
    from tripletface import finetune as module

    chips = small_chipset(persons=6, per_person=3, size=64)
    calls = []
    real = module.finetune

    def recorded(config, train, encoder, held, every, patience, pull, score, progress, targets):
        calls.append((train, held, score, targets))
        return real(config, train, encoder, held, every, patience, pull, score, progress, targets)

    monkeypatch.setattr(module, "finetune", recorded)
    torch.manual_seed(0)
    model = CompactNet(input_size=64, width=4)
    model.chip_padding = 0.25  # a stand-in for dlib-resnet: the mask is drawn on its chips
    config = TrainConfig(
        encoder="compact", p=2, k=2, steps=2, seed=0, distill=1.0, condition="mask", held_apart=2
    )
    start = module.unit_embeddings(model, chips)
    result = module.finetune_chips(config, chips, model, every=1, patience=5)
    ((train, held, score, targets),) = calls
    held_names = module.held_apart_persons(chips, 2, 0)
    assert sorted(held.classes) == held_names and not set(train.classes) & set(held_names)
    assert result.trained_on is train and result.run.step == 2
    # Every training photo twice: clean, then masked; both aim at the clean photo's embedding.
    kept = [i for i, label in enumerate(chips.labels) if chips.classes[label] in train.classes]
    assert isinstance(train, CameraDraws) and len(train) == 2 * len(kept)
    masked = in_condition(chips, "mask", 0, 0.25).chips
    for position, item in enumerate(kept):
        assert torch.equal(train[position][0], chips.chips[item])
        assert torch.equal(train[len(kept) + position][0], masked[item])
    # close, not equal: a CPU's convolution kernels may sum in another order for another batch
    torch.testing.assert_close(targets, torch.cat([start[kept], start[kept]]), rtol=0, atol=1e-6)
    # Early stopping scores the masked held-apart chips, guarded by their clean versions.
    assert score.func is module.guarded_score
    assert not torch.equal(held.chips, score.keywords["clean"].chips)
    assert [step for step, _ in result.scores] == [0, 1, 2]
    with pytest.raises(InputError, match="changed chips need"):
        module.finetune_chips(replace(config, condition=None), chips, model, changed=chips)
    # Without redraws the training persons' changed chips are those given, drawn once.
    calls.clear()
    module.finetune_chips(config, chips, model, changed=chips, every=1, redraw=False)
    ((fixed, _, _, _),) = calls
    assert isinstance(fixed, ChipSet) and torch.equal(
        fixed.chips, torch.cat([chips.chips[kept]] * 2)
    )


@pytest.mark.filterwarnings("ignore:embeddings collapsed:RuntimeWarning")
@pytest.mark.slow  # detects 12 faces and fine-tunes dlib-resnet's head through the CLI: ~10 s
def test_cli_adapts_to_a_camera_with_held_apart_persons_and_distillation(tmp_path, capsys):
    root = tmp_path / "photos"
    write_photos(root, persons=4)
    run = tmp_path / "run"
    args = ["train", str(root), "--out", str(run), "--encoder", "dlib-resnet", "--pretrained"]
    args += shlex.split(
        "--freeze 5 --steps 2 --p 2 --k 2 --strategy all --threads 1 --quiet --json "
        "--held-apart 2 --condition low-resolution --every 1 --patience 5"
    )
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    config = summary["config"]
    assert config["held_apart"] == 2 and config["condition"] == "low-resolution"
    # A camera run's own defaults: stronger distillation and learning than on clean photos.
    assert config["distill"] == CAMERA_DISTILL and config["lr"] == CAMERA_LR
    assert config["augment"] is False
    assert [step for step, _ in summary["held_apart_scores"]] == [0, 1, 2]
    assert summary["kept_step"] in (0, 1, 2) and summary["best"] == str(run / "best.pt")
    kept = load_encoder(run / "best.pt")
    assert isinstance(kept, DlibResNet) and kept.normalized
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and float(rows[1].split(",")[3]) > 0  # the distillation column

    # Bad values, each a one-line error (the cached chips spare a second detection).
    cache = ["--cache", str(run / "faces.npz")]
    for extra, message in (
        (["--held-apart", "3"], "cannot hold 3 of 4 persons apart"),
        (["--condition", "fog"], "unknown camera condition 'fog'"),
        (["--distill", "-1"], "distill = -1.0 must be >= 0"),
        (["--held-apart", "2", "--every", "0"], "--every 0 and --patience 3 must be >= 1"),
        (["--condition", "mask", "--tolerance", "2"], "--tolerance 2.0"),
    ):
        other = ["train", str(root), "--out", str(tmp_path / "bad"), "--encoder", "dlib-resnet"]
        assert main([*other, "--pretrained", "--quiet", *cache, *extra]) == 2, extra
        last = capsys.readouterr().err.splitlines()[-1]  # after the chips' summary line
        assert last.startswith("tripletface: error: ") and message in last, (extra, last)
    assert main(["train", str(root), "--out", str(run), "--resume", "--quiet"]) == 2
    assert "do not resume" in capsys.readouterr().err


def test_cli_train_help_states_the_fine_tuning_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())

    def number(value: float) -> str:
        return f"{value:g}".replace("e-0", "e-")

    assert f"with --pretrained {number(FINETUNE_LR)}, or {number(CAMERA_LR)} with" in text
    assert f"(0; {number(CAMERA_DISTILL)} with --condition)" in text
    assert f"may lose ({number(CAMERA_TOLERANCE)})" in text


def test_cli_fine_tuning_options_need_pretrained_weights_and_photos(tmp_path, capsys):
    out = ["--out", str(tmp_path / "run"), "--quiet"]
    for extra in (["--distill", "1"], ["--condition", "mask"], ["--held-apart", "3"]):
        assert main(["train", "synthetic:4x2", *out, *extra]) == 2
        assert "add --pretrained" in capsys.readouterr().err
    dlib = ["--encoder", "dlib-resnet", "--pretrained", "--held-apart", "2", "--steps", "1"]
    assert main(["train", "synthetic:4x2", *out, *dlib]) == 2
    assert "not on synthetic faces" in capsys.readouterr().err
