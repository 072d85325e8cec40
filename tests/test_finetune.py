"""Fine-tuning mechanics: frozen stages stay put, the rest moves, the set-up survives a resume.

The photos are one face (scikit-image's astronaut) in several variants, so nothing here measures
recognition; bench/orl_finetune.py does, on real identities.
"""

import json
import shlex
import shutil

import pytest
import skimage.data
import torch
from PIL import Image
from test_chips import CountingDetector, write_photos

from tripletface.cli import main
from tripletface.errors import InputError
from tripletface.finetune import (
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
