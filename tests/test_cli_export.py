"""``tripletface export``: a checked model (through a real process, then in this one to spare
torch's start-up), or one clear error."""

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from tripletface.cli import main
from tripletface.models.checkpoint import save_checkpoint
from tripletface.models.compact import CompactNet
from tripletface.models.runtime import TorchRuntime


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tripletface", "export", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_checkpoint_is_exported_checked_on_photos_and_quantised(tmp_path, astronaut):
    torch.manual_seed(0)
    encoder = CompactNet(input_size=32, width=4, embedding_dim=8).eval()
    checkpoint = save_checkpoint(tmp_path / "last.pt", encoder)
    photos = []
    for i in range(2):
        photos.append(tmp_path / f"p{i}.png")
        Image.fromarray(astronaut[i * 100 :]).save(photos[-1])
    out = tmp_path / "models" / "compact.onnx"
    done = export(str(checkpoint), str(out), "--photos", *map(str, photos))
    assert done.returncode == 0, done.stderr
    assert f"fingerprint {encoder.fingerprint()}" in done.stdout
    assert "on 2 chips of 2 photos" in done.stdout
    chips = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"chips": chips})[0]
    assert np.abs(got - TorchRuntime(encoder).embed(chips)).max() <= 1e-4

    int8 = tmp_path / "int8.onnx"
    assert main(["export", str(checkpoint), str(int8), "--int8"]) == 0
    assert int8.stat().st_size < out.stat().st_size


def test_bad_arguments_get_one_error_line_and_no_file(tmp_path, capsys):
    assert main(["export", "compact", str(tmp_path / "model.bin")]) == 2
    assert "give the output file a .onnx suffix" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "m.onnx")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
