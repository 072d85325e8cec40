"""Encoders exported to ONNX: N x H x W x 3 uint8 chips in, unit-length N x D float32 rows out.

The graph holds what the torch runtime does around the network (channels first, float, L2
normalisation), so that onnxruntime needs the chips only; the batch size is dynamic. The model's
metadata holds the encoder's ``EncoderInfo`` (weights fingerprint, embedding length, input,
chip padding). ``export_onnx`` runs the exported model with onnxruntime on the chips it is given
and compares it with torch: a model that differs by more than TOLERANCE is not written.
"""

import inspect
import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from tripletface.cache import write_bytes_atomic
from tripletface.errors import InputError
from tripletface.models.base import Encoder
from tripletface.models.runtime import (
    METADATA_KEY,
    EncoderInfo,
    TorchRuntime,
    onnxruntime,
)

#: Largest absolute difference allowed between the exported model's embeddings and torch's.
TOLERANCE = 1e-4
# ONNX opset: onnxruntime >= 1.17 runs it, torch's TorchScript exporter writes it.
_OPSET = 17


class ChipInput(nn.Module):
    """The encoder as the runtimes use it: N x H x W x 3 uint8 chips -> unit-length rows."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(chips.permute(0, 3, 1, 2).float()), dim=1)


def export_onnx(
    encoder: Encoder, path: str | Path, chips: np.ndarray, tolerance: float = TOLERANCE
) -> float:
    """Write the encoder as an ONNX model to ``path`` (atomically) after checking it on
    N x H x W x 3 uint8 ``chips`` against torch; returns the largest absolute difference.

    InputError, and nothing written, if the difference exceeds ``tolerance``.
    """
    reference = TorchRuntime(encoder)
    chips = np.ascontiguousarray(chips, dtype=np.uint8)
    if chips.ndim != 4 or chips.shape[1:] != (*reference.info.input_size, 3) or len(chips) < 2:
        raise InputError(
            f"the export check needs at least 2 chips of {reference.info.input_size} x 3, "
            f"got {chips.shape}"
        )
    model = onnx_bytes(reference, chips[:2])
    session = onnxruntime().InferenceSession(model, providers=["CPUExecutionProvider"])
    expected = reference.embed(chips)
    # The whole batch and a single chip: the batch dimension is dynamic.
    difference = max(
        float(np.abs(session.run(None, {"chips": chips})[0] - expected).max()),
        float(np.abs(session.run(None, {"chips": chips[:1]})[0] - expected[:1]).max()),
    )
    if not difference <= tolerance:
        raise InputError(
            f"the ONNX export of this encoder differs from torch by {difference:.2e} "
            f"(more than {tolerance:g}) on {len(chips)} chips: {path} not written; "
            "use --runtime torch"
        )
    write_bytes_atomic(Path(path), model)
    return difference


def onnx_bytes(runtime: TorchRuntime, example: np.ndarray) -> bytes:
    """The serialised ONNX model of a torch runtime's encoder, traced on ``example`` chips,
    with its EncoderInfo in the metadata."""
    import onnx

    buffer = io.BytesIO()
    exporter = inspect.signature(torch.onnx.export).parameters
    options = {"dynamo": False} if "dynamo" in exporter else {}
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated; it needs no onnxscript.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ChipInput(runtime.encoder).eval(),
            (torch.from_numpy(example),),
            buffer,
            input_names=["chips"],
            output_names=["embeddings"],
            dynamic_axes={"chips": {0: "faces"}, "embeddings": {0: "faces"}},
            opset_version=_OPSET,
            **options,
        )
    return with_info(onnx.load_from_string(buffer.getvalue()), runtime.info)


def with_info(model, info: EncoderInfo) -> bytes:
    """An onnx ModelProto serialised with ``info`` in its metadata."""
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    return model.SerializeToString()


def synthetic_chips(input_size: tuple[int, int], count: int = 8, seed: int = 0) -> np.ndarray:
    """``count`` x H x W x 3 uint8 synthetic faces (tripletface.data.synthetic), 2 per person."""
    from tripletface.data.synthetic import SyntheticFaces

    height, width = input_size
    faces = SyntheticFaces(-(-count // 2), 2, size=height, seed=seed)
    chips = [faces.render(i) for i in range(count)]
    if width != height:
        chips = [np.asarray(Image.fromarray(c).resize((width, height))) for c in chips]
    return np.stack(chips)
