"""Encoders run for inference: N x H x W x 3 uint8 chips in, unit-length N x D float32 rows out.

``TorchRuntime`` runs the PyTorch encoder itself; ``OnnxRuntime`` runs the same encoder exported
to ONNX (``tripletface.models.onnx_export``) with onnxruntime and never imports torch, so that a
one-photo command does not pay torch's second of start-up. ``load_runtime`` chooses one.

The ONNX model of an encoder is exported once, with torch, into the user's data folder
(``$XDG_DATA_HOME/tripletface/onnx``), named by the fingerprint of its weights; a key file
records that fingerprint under the path, size and modification time of the weights file, so that
later processes find the model, and the fingerprint the gallery checks, without torch. The int8
model (``onnx-int8``) is quantised from the float one once, the same way
(``tripletface.models.quantize``). Float embeddings of both runtimes agree within
``onnx_export.TOLERANCE`` (the export refuses a model that does not), so one gallery takes both.
"""

import contextlib
import functools
import hashlib
import importlib.util
import json
import platform
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tripletface.cache import (
    data_dir,
    move_into_place,
    temporary_path,
    write_bytes_atomic,
)
from tripletface.errors import InputError
from tripletface.models import encoder_class, load_encoder, weights_file

if TYPE_CHECKING:
    from tripletface.models.base import Encoder

#: The runtimes a recognizer or command can ask for; "auto" is AUTO when onnxruntime is installed
#: and the encoder has weights on disk, else torch.
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
# int8 is the default: on dlib-resnet it is 2.3x faster than float32 and loses 0.09 (ORL) and
# 0.05 (celeba299) points of verification accuracy, within the 0.2 allowed (bench/onnx_int8.py).
AUTO = "onnx-int8"

# Part of every cache key: bumped when exported models change, so that old ones are not reused.
_EXPORT_FORMAT = "1"
# Chips per onnxruntime call, to bound the memory of large batches.
_BATCH = 64


@dataclass(frozen=True)
class EncoderInfo:
    """What galleries and chip makers need of an encoder: weights fingerprint, embedding length,
    input (height, width) and chip padding (None: whole images)."""

    fingerprint: str
    embedding_dim: int
    input_size: tuple[int, int]
    chip_padding: float | None

    def to_json(self) -> str:
        """The info as JSON, as exported models carry it in their metadata."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "EncoderInfo":
        """The info written by ``to_json``."""
        fields = json.loads(text)
        return cls(**{**fields, "input_size": tuple(fields["input_size"])})


#: The metadata key of an exported model that holds its EncoderInfo.
METADATA_KEY = "tripletface"


class Runtime(ABC):
    """Inference for one encoder: ``embed`` chips; ``info`` says what it takes and gives."""

    kind: str
    info: EncoderInfo

    @abstractmethod
    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Unit-length N x D float32 embeddings of N x H x W x 3 uint8 chips."""

    @contextmanager
    def threads(self, count: int | None) -> Iterator[None]:
        """Run the block's ``embed`` calls on at most ``count`` threads (None: the default)."""
        yield


class TorchRuntime(Runtime):
    """The PyTorch encoder itself, in eval mode."""

    kind = "torch"

    def __init__(self, encoder: "Encoder"):
        self.encoder = encoder.eval()
        self.info = EncoderInfo(
            encoder.fingerprint(),
            encoder.embedding_dim,
            tuple(encoder.input_size),
            getattr(encoder, "chip_padding", None),
        )

    def embed(self, chips: np.ndarray) -> np.ndarray:
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()
        return torch.nn.functional.normalize(self.encoder.embed(batch), dim=1).numpy()

    @contextmanager
    def threads(self, count: int | None) -> Iterator[None]:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(count or before)
        try:
            yield
        finally:
            torch.set_num_threads(before)


class OnnxRuntime(Runtime):
    """An exported model (``onnx_export``) run by onnxruntime on the CPU, without torch.

    ``info``, when known (from the cache's key file), spares reading the model until the first
    ``embed``, so that commands that only open the gallery never load it. ``keep_optimized``:
    save the graph onnxruntime optimises beside the model and load that next time.
    """

    def __init__(
        self,
        path: str | Path,
        kind: str = "onnx",
        info: EncoderInfo | None = None,
        keep_optimized: bool = False,
    ):
        self.path = Path(path)
        self.kind = kind
        self.keep_optimized = keep_optimized
        if info is None:
            metadata = self.session.get_modelmeta().custom_metadata_map
            try:
                info = EncoderInfo.from_json(metadata[METADATA_KEY])
            except (KeyError, ValueError, TypeError):
                raise InputError(
                    f"{self.path} has no tripletface metadata: export the encoder with "
                    "tripletface export"
                ) from None
        self.info = info

    @functools.cached_property
    def session(self):
        """The onnxruntime session, created on first use.

        onnxruntime optimises a graph each time it loads it (fusions, blocked layouts for this
        CPU), half of the load time: with ``keep_optimized`` the optimised graph is saved beside
        the model, once per onnxruntime version and CPU, and loaded as it is afterwards.
        """
        ort = onnxruntime()
        # Named after the model file's state and the machine: a new model is optimised anew.
        key = f"{_file_key(self.path)[:12]}-{_machine_key()}"
        optimized = self.path.with_name(f"{self.path.stem}.{key}.optimized.onnx")
        ready = self.keep_optimized and optimized.is_file()
        options = ort.SessionOptions()
        # Idle threads sleep instead of spinning: detection workers need the cores meanwhile.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if ready:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        elif self.keep_optimized:
            options.optimized_model_filepath = str(temporary_path(optimized))
            options.log_severity_level = 3  # not the warning that the copy fits this CPU only
        source = optimized if ready else self.path
        try:
            session = ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise InputError(
                f"{source} is not a readable ONNX model ({reason[:120]}): delete it and "
                "export the encoder again"
            ) from None
        if options.optimized_model_filepath:
            with contextlib.suppress(OSError):
                move_into_place(options.optimized_model_filepath, optimized)
        return session

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = np.ascontiguousarray(chips, dtype=np.uint8)
        expected = (*self.info.input_size, 3)
        if chips.ndim != 4 or chips.shape[1:] != expected:
            raise InputError(
                f"{self.path.name} takes N x {' x '.join(map(str, expected))} uint8 chips, "
                f"got {chips.shape}"
            )
        if len(chips) == 0:
            return np.empty((0, self.info.embedding_dim), np.float32)
        parts = [
            self.session.run(None, {"chips": chips[i : i + _BATCH]})[0]
            for i in range(0, len(chips), _BATCH)
        ]
        return np.concatenate(parts)


def _machine_key() -> str:
    """A name for this onnxruntime version on this kind of CPU (its instruction set flags)."""
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line[:5] == "flags"
        )
    except (OSError, StopIteration):
        flags = platform.processor()
    text = f"{onnxruntime().__version__}\0{platform.machine()}\0{flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def onnxruntime():
    """The onnxruntime module; InputError saying how to install it if it is missing."""
    try:
        import onnxruntime
    except ImportError:
        raise InputError(
            "the onnx runtimes need onnxruntime: pip install 'tripletface[onnx]', "
            "or choose --runtime torch"
        ) from None
    return onnxruntime


def onnxruntime_available() -> bool:
    """Whether onnxruntime is installed (found without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_kind(encoder: "str | Path | Encoder", kind: str = "auto") -> str:
    """The runtime ``kind`` names for this encoder: "auto" is AUTO when onnxruntime is installed
    and the encoder's weights are in a file (a checkpoint, a pretrained name), else torch."""
    if kind not in RUNTIMES:
        raise InputError(f"runtime {kind!r} is unknown: choose one of {', '.join(RUNTIMES)}")
    if kind != "auto":
        return kind
    on_disk = isinstance(encoder, (str, Path)) and weights_file(encoder) is not None
    return AUTO if on_disk and onnxruntime_available() else "torch"


def load_runtime(
    encoder: "str | Path | Encoder", kind: str = "auto", folder: Path | None = None
) -> Runtime:
    """The runtime ``kind`` (see RUNTIMES) of an encoder name, checkpoint path or Encoder; ONNX
    models come from the cache ``folder`` (default: cache_dir()), exported there if missing."""
    kind = resolve_kind(encoder, kind)
    if kind == "torch":
        return TorchRuntime(load_encoder(encoder) if isinstance(encoder, (str, Path)) else encoder)
    if not onnxruntime_available():
        onnxruntime()  # reports it before any export; imported only when a session starts
    path, info = cached_model(encoder, kind == "onnx-int8", folder)
    return OnnxRuntime(path, kind, info, keep_optimized=True)


def cache_dir() -> Path:
    """Where exported models are kept: $XDG_DATA_HOME/tripletface/onnx (~/.local/share/...)."""
    return data_dir() / "onnx"


def cached_model(
    encoder: "str | Path | Encoder", int8: bool = False, folder: Path | None = None
) -> tuple[Path, EncoderInfo]:
    """(path, info) of the encoder's exported model (int8: quantised) in ``folder``, made there
    if missing.

    An encoder named by a weights file is found through that file's key, without torch; an
    Encoder object by its fingerprint (computed with torch).
    """
    folder = folder or cache_dir()
    weights = weights_file(encoder) if isinstance(encoder, (str, Path)) else None
    if isinstance(encoder, (str, Path)) and weights is None:
        encoder_class(str(encoder))  # an unknown name is reported as such
        raise InputError(
            f"encoder {encoder} has random weights, which no exported model can keep: give a "
            "trained checkpoint (.pt), or choose --runtime torch"
        )
    key = folder / "keys" / f"{_file_key(weights)}.json" if weights is not None else None
    info = _read_info(key) if key is not None else None
    if info is None or not _model_path(folder, info).is_file():
        runtime = TorchRuntime(
            load_encoder(encoder) if isinstance(encoder, (str, Path)) else encoder
        )
        info = runtime.info
        if not _model_path(folder, info).is_file():
            from tripletface.models.onnx_export import export_onnx, synthetic_chips

            chips = synthetic_chips(info.input_size)
            export_onnx(runtime.encoder, _model_path(folder, info), chips)
        if key is not None:
            write_bytes_atomic(key, info.to_json().encode())
    path = _model_path(folder, info)
    if not int8:
        return path, info
    quantized = _model_path(folder, info, "int8")
    if not quantized.is_file():
        from tripletface.models.onnx_export import synthetic_chips
        from tripletface.models.quantize import CALIBRATION_CHIPS, quantize_int8

        quantize_int8(path, quantized, synthetic_chips(info.input_size, CALIBRATION_CHIPS))
    return quantized, info


def _model_path(folder: Path, info: EncoderInfo, variant: str = "float32") -> Path:
    """Where the cache keeps an encoder's model: named by fingerprint, format and variant."""
    return folder / f"{info.fingerprint}.v{_EXPORT_FORMAT}.{variant}.onnx"


def _file_key(path: Path) -> str:
    """A name for the current content of a weights file, from its path, size and mtime."""
    try:
        stat = path.resolve().stat()
    except OSError:
        return "missing"  # never written: load_encoder then reports the missing file
    text = f"{_EXPORT_FORMAT}\0{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_info(key: Path) -> EncoderInfo | None:
    """The EncoderInfo a key file records, or None if there is none (or it is unreadable)."""
    try:
        return EncoderInfo.from_json(key.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
