"""ONNX export: the model onnxruntime runs equals torch's on real chips, for any batch size."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tripletface.errors import InputError
from tripletface.models import load_encoder
from tripletface.models.base import Encoder
from tripletface.models.compact import CompactNet
from tripletface.models.onnx_export import TOLERANCE, export_onnx, synthetic_chips
from tripletface.models.runtime import METADATA_KEY, EncoderInfo, TorchRuntime, cached_model


def photo_chips(photo: np.ndarray, side: int, count: int = 6) -> np.ndarray:
    """Crops of a real photo at several places and scales, resized to side x side."""
    height, width = photo.shape[:2]
    crops = []
    for i in range(count):
        size = int(min(height, width) * (0.4 + 0.1 * i))
        top, left = (height - size) * i // count, (width - size) * (count - i) // count
        crop = Image.fromarray(photo[top : top + size, left : left + size])
        crops.append(np.asarray(crop.resize((side, side), Image.BILINEAR)))
    return np.stack(crops)


def run(path, chips: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"chips": chips})[0]


def test_compact_export_equals_torch_on_real_chips_at_every_batch_size(tmp_path, astronaut):
    torch.manual_seed(0)
    encoder = CompactNet(input_size=48, width=8, embedding_dim=32).eval()
    chips = photo_chips(astronaut, 48)
    difference = export_onnx(encoder, tmp_path / "compact.onnx", chips)
    assert 0 <= difference <= TOLERANCE
    expected = TorchRuntime(encoder).embed(chips)
    for size in (1, 2, 5, len(chips)):
        got = run(tmp_path / "compact.onnx", chips[:size])
        assert got.shape == (size, 32) and got.dtype == np.float32
        assert np.abs(got - expected[:size]).max() <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1, atol=1e-6)


def test_the_model_carries_the_encoders_info(tmp_path, astronaut):
    encoder = CompactNet(input_size=32, width=4, embedding_dim=8).eval()
    export_onnx(encoder, tmp_path / "m.onnx", photo_chips(astronaut, 32, 3))
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    info = EncoderInfo.from_json(metadata[METADATA_KEY])
    assert info == EncoderInfo(encoder.fingerprint(), 8, (32, 32), None)


class BatchDependent(Encoder):
    """Adds the batch size to every output: tracing freezes it, so the export is wrong."""

    input_size = (16, 16)
    embedding_dim = 3

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(images.mean((2, 3)) / 255 + images.shape[0], dim=1)


def test_a_model_that_differs_from_torch_is_not_written(tmp_path, astronaut):
    target = tmp_path / "bad.onnx"
    target.write_bytes(b"the previous model")
    chips = photo_chips(astronaut, 16, 4)
    with pytest.raises(InputError, match=r"differs from torch.*not written"):
        export_onnx(BatchDependent(), target, chips)
    assert target.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_chips_of_another_size_are_refused(tmp_path, astronaut):
    with pytest.raises(InputError, match="at least 2 chips"):
        export_onnx(CompactNet(input_size=32), tmp_path / "m.onnx", photo_chips(astronaut, 48))


def test_synthetic_chips_are_distinct_faces_of_the_asked_size():
    chips = synthetic_chips((40, 40), 5)
    assert chips.shape == (5, 40, 40, 3) and chips.dtype == np.uint8
    assert len({c.tobytes() for c in chips}) == 5
    np.testing.assert_array_equal(chips, synthetic_chips((40, 40), 5))


@pytest.mark.slow
def test_dlib_resnets_cached_model_equals_torch_on_aligned_real_faces(astronaut, hog):
    from tripletface.faces.align import face_chips

    faces = hog.detect(astronaut)
    chips = face_chips(astronaut, faces, 150, 0.25)
    chips = np.concatenate([chips, chips[:, :, ::-1], np.roll(chips, 7, axis=1)])
    path, info = cached_model("dlib-resnet")  # in the session's data folder (conftest.py)
    expected = TorchRuntime(load_encoder("dlib-resnet")).embed(chips)
    assert info == TorchRuntime(load_encoder("dlib-resnet")).info
    assert np.abs(run(path, chips) - expected).max() <= TOLERANCE
    assert np.abs(run(path, chips[:1]) - expected[:1]).max() <= TOLERANCE
