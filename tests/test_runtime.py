"""Runtimes: torch and onnxruntime give the same unit rows; the cache works without torch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tripletface.errors import InputError
from tripletface.models.checkpoint import save_checkpoint
from tripletface.models.compact import CompactNet
from tripletface.models.runtime import (
    AUTO,
    OnnxRuntime,
    TorchRuntime,
    cached_model,
    load_runtime,
    resolve_kind,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    encoder = CompactNet(input_size=32, width=8, embedding_dim=16)
    return save_checkpoint(tmp_path_factory.mktemp("run") / "last.pt", encoder), encoder.eval()


@pytest.fixture(scope="module")
def runtimes(checkpoint, tmp_path_factory):
    path = checkpoint[0]
    folder = tmp_path_factory.mktemp("cache")
    return load_runtime(path, "torch"), load_runtime(path, "onnx", folder), folder


def test_auto_is_onnx_for_weights_on_disk_and_torch_for_objects_and_random_weights(checkpoint):
    path, encoder = checkpoint
    assert resolve_kind("dlib-resnet") == resolve_kind(path) == AUTO in ("onnx", "onnx-int8")
    assert resolve_kind(encoder) == resolve_kind("compact") == "torch"
    assert resolve_kind("compact", "onnx-int8") == "onnx-int8"
    with pytest.raises(InputError, match="runtime 'tensorrt' is unknown"):
        resolve_kind("dlib-resnet", "tensorrt")


@settings(max_examples=15)
@given(st.integers(0, 70), st.integers(0, 2**32 - 1))
def test_both_runtimes_give_the_same_unit_rows(runtimes, count, seed):
    torch_rt, onnx_rt, _ = runtimes
    chips = np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    a, b = torch_rt.embed(chips), onnx_rt.embed(chips)
    assert a.shape == b.shape == (count, 16) and b.dtype == np.float32
    assert count == 0 or np.abs(a - b).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)


def test_both_runtimes_report_the_same_encoder(runtimes, checkpoint):
    torch_rt, onnx_rt, _ = runtimes
    assert isinstance(torch_rt, TorchRuntime) and isinstance(onnx_rt, OnnxRuntime)
    assert torch_rt.info == onnx_rt.info
    assert onnx_rt.info.fingerprint == checkpoint[1].fingerprint()
    assert (onnx_rt.kind, torch_rt.kind) == ("onnx", "torch")


def test_the_optimised_graph_is_saved_once_and_gives_the_same_rows(runtimes, checkpoint):
    _, onnx_rt, folder = runtimes
    chips = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    first = onnx_rt.embed(chips)
    (optimized,) = folder.glob(f"{onnx_rt.info.fingerprint}.*.optimized.onnx")
    again = load_runtime(checkpoint[0], "onnx", folder)
    np.testing.assert_allclose(again.embed(chips), first, atol=1e-6)
    assert list(folder.glob("*.optimized.onnx")) == [optimized]


def test_chips_of_another_size_are_refused(runtimes):
    with pytest.raises(InputError, match=r"takes N x 32 x 32 x 3 uint8 chips"):
        runtimes[1].embed(np.zeros((2, 40, 40, 3), np.uint8))


NO_TORCH = """import sys
from pathlib import Path
import numpy as np
from tripletface.models.runtime import load_runtime
runtime = load_runtime(sys.argv[1], "onnx", Path(sys.argv[2]))
print(runtime.info.fingerprint, runtime.embed(np.zeros((1, 32, 32, 3), "uint8")).shape)
print("torch" in sys.modules)
"""


def test_a_cached_model_is_found_and_run_without_torch(runtimes, checkpoint):
    _, _, folder = runtimes
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(checkpoint[0]), str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == [checkpoint[1].fingerprint(), "(1,", "16)", "False"]


def test_new_weights_in_the_same_file_are_exported_again(tmp_path):
    path = tmp_path / "last.pt"
    fingerprints = []
    for seed in (2, 3):
        torch.manual_seed(seed)
        encoder = CompactNet(input_size=32, width=4, embedding_dim=8)
        save_checkpoint(path, encoder)
        os.utime(path, ns=(seed * 10**9, seed * 10**9))  # mtimes apart whatever the clock
        model, info = cached_model(path, folder=tmp_path / "cache")
        assert info.fingerprint == encoder.fingerprint() and model.is_file()
        fingerprints.append(info.fingerprint)
    assert fingerprints[0] != fingerprints[1]
    keys = sorted((tmp_path / "cache" / "keys").iterdir())
    assert len(keys) == 2
    assert {json.loads(k.read_text())["fingerprint"] for k in keys} == set(fingerprints)


def test_an_encoder_object_is_exported_by_its_fingerprint(tmp_path):
    encoder = CompactNet(input_size=32, width=4, embedding_dim=8).eval()
    runtime = load_runtime(encoder, "onnx", tmp_path)
    assert runtime.path.parent == tmp_path
    assert runtime.path.name.startswith(f"{encoder.fingerprint()}.")
    assert not (tmp_path / "keys").exists()


def test_unusable_encoders_and_files_get_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="compact has random weights"):
        load_runtime("compact", "onnx", tmp_path)
    with pytest.raises(InputError, match="unknown encoder 'resnet-9000'"):
        load_runtime("resnet-9000", "onnx", tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_runtime(tmp_path / "missing.pt", "onnx", tmp_path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match=r"junk\.onnx is not a readable ONNX model"):
        OnnxRuntime(tmp_path / "junk.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(InputError, match=r"pip install 'tripletface\[onnx\]'"):
        load_runtime("dlib-resnet", "onnx", tmp_path)
