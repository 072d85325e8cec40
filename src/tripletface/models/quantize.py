"""int8 encoders for onnxruntime: static quantisation of an exported model, calibrated on chips.

Weights become int8 per output channel, activations uint8 with ranges measured on calibration
chips (onnxruntime's QDQ format, which its CPU provider runs as integer convolutions: VNNI on
CPUs that have it). The first convolution, which sees the raw pixels, and the final linear maps
stay float: on dlib-resnet that halves how far embeddings move from float32 for 15% of the
speed-up (bench/onnx_int8.py). Dynamic quantisation needs no calibration but runs convolutions as
ConvInteger, several times slower than float on this network (measured on dlib-resnet), so it is
not offered. Accuracy against float32: bench/onnx_int8.py.
"""

import tempfile
from pathlib import Path

import numpy as np

from tripletface.cache import write_bytes_atomic
from tripletface.models.runtime import onnxruntime

#: Calibration chips used when the caller has none of its own.
CALIBRATION_CHIPS = 32


def quantize_int8(source: Path, target: Path, chips: np.ndarray) -> Path:
    """Write the int8 model of the exported float model ``source`` to ``target`` (atomically),
    activation ranges calibrated on N x H x W x 3 uint8 ``chips``; the metadata is kept."""
    import onnx

    onnxruntime()  # installed, or a clear error
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Chips(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(np.ascontiguousarray(chips, np.uint8), 4))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"chips": batch}

    with tempfile.TemporaryDirectory() as work:
        prepared, quantized = Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        quant_pre_process(str(source), str(prepared))
        nodes = onnx.load(prepared).graph.node  # in topological order
        convolutions = [node.name for node in nodes if node.op_type == "Conv"]
        linear = [node.name for node in nodes if node.op_type in ("MatMul", "Gemm")]
        quantize_static(
            str(prepared),
            str(quantized),
            Chips(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=convolutions[:1] + linear,
        )
        return write_bytes_atomic(target, quantized.read_bytes())
