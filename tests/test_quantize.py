"""int8 quantisation: a smaller model of integer convolutions, close to the float one."""

import numpy as np
import onnx
import pytest
import torch
from test_onnx_export import photo_chips

from tripletface.models.compact import CompactNet
from tripletface.models.onnx_export import export_onnx
from tripletface.models.quantize import quantize_int8
from tripletface.models.runtime import OnnxRuntime


@pytest.fixture(scope="module")
def exported(tmp_path_factory, astronaut):
    torch.manual_seed(0)
    encoder = CompactNet(input_size=48, width=8, embedding_dim=32).eval()
    path = tmp_path_factory.mktemp("int8") / "float.onnx"
    export_onnx(encoder, path, photo_chips(astronaut, 48))
    return path


def test_int8_model_is_quantised_keeps_its_info_and_stays_close(exported, astronaut):
    calibration = photo_chips(astronaut[::-1], 48, 8)
    target = exported.with_name("int8.onnx")
    quantize_int8(exported, target, calibration)
    ops = {node.op_type for node in onnx.load(target).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    float_rt, int8_rt = OnnxRuntime(exported), OnnxRuntime(target, "onnx-int8")
    assert int8_rt.info == float_rt.info
    chips = photo_chips(astronaut, 48, 6)
    a, b = float_rt.embed(chips), int8_rt.embed(chips)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    cosine = (a * b).sum(1)
    assert cosine.min() > 0.98
    assert not np.array_equal(a, b)
