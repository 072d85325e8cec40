"""Checkpoints: round trip of an encoder and the training state, atomic writes, clear errors."""

import pytest
import torch

from tripletface.errors import InputError
from tripletface.models import load_encoder
from tripletface.models.checkpoint import load_checkpoint, load_encoder_checkpoint, save_checkpoint
from tripletface.models.compact import CompactNet


def trained_a_little(model: torch.nn.Module) -> torch.optim.Optimizer:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    model(images).sum().backward()
    optimizer.step()
    return optimizer


def test_round_trip_rebuilds_the_same_encoder(tmp_path):
    model = CompactNet(input_size=32, width=8, embedding_dim=16)
    trained_a_little(model)
    path = save_checkpoint(tmp_path / "run" / "last.pt", model, config={"lr": 0.01}, step=3)
    loaded = load_encoder(path)
    assert isinstance(loaded, CompactNet) and not loaded.training
    assert loaded.init_kwargs == model.init_kwargs
    assert loaded.fingerprint() == model.fingerprint()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(loaded(images), model.eval()(images))


def test_training_state_survives(tmp_path):
    model = CompactNet(input_size=32, width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)).sum().backward()
    optimizer.step()
    scheduler.step()
    rng = torch.get_rng_state()
    path = tmp_path / "last.pt"
    save_checkpoint(
        path,
        model,
        optimizer,
        scheduler,
        config={"seed": 7},
        epoch=2,
        step=11,
        metrics={"loss": 0.5},
        extra={"rng": rng},
    )
    state = load_checkpoint(path)
    assert (state["epoch"], state["step"], state["config"], state["metrics"]) == (
        2,
        11,
        {"seed": 7},
        {"loss": 0.5},
    )
    assert state["architecture"] == "compact"
    fresh = torch.optim.Adam(CompactNet(input_size=32, width=8).parameters(), lr=1.0)
    fresh.load_state_dict(state["optimizer"])
    assert fresh.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.005
    assert state["scheduler"]["last_epoch"] == 1
    assert torch.equal(state["extra"]["rng"], rng)
    assert list(tmp_path.iterdir()) == [path], "no temporary file may be left behind"


def test_overwriting_keeps_one_file(tmp_path):
    model = CompactNet(input_size=32, width=8)
    for step in range(3):
        save_checkpoint(tmp_path / "last.pt", model, step=step)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    model = CompactNet(input_size=32, width=8)
    path = save_checkpoint(tmp_path / "last.pt", model, step=1)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        save_checkpoint(path, model, step=2)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nothing\.pt does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_a_corrupt_file_is_named(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"bad\.pt"):
        load_encoder_checkpoint(path)


def test_a_truncated_checkpoint_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "cut.pt", CompactNet(input_size=32, width=8))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"cut\.pt"):
        load_checkpoint(path)


def test_another_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(CompactNet(input_size=32, width=8).state_dict(), path)
    with pytest.raises(InputError, match=r"weights\.pt is not a tripletface checkpoint"):
        load_encoder_checkpoint(path)


def test_mismatched_weights_are_named(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", CompactNet(input_size=32, width=8))
    state = load_checkpoint(path)
    state["kwargs"]["width"] = 16
    torch.save(state, path)
    with pytest.raises(InputError, match=r"m\.pt does not match encoder 'compact'"):
        load_encoder_checkpoint(path)


def test_a_checkpoint_needs_a_registered_architecture(tmp_path):
    class Unregistered(CompactNet):
        pass

    with pytest.raises(InputError, match=r"Unregistered"):
        save_checkpoint(tmp_path / "u.pt", Unregistered(input_size=32, width=8))
