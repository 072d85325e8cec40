"""Encoder architectures by name. A new architecture is one file plus one line in ``_BUILTIN``.

Importing this package does not import torch (the architectures are imported on first use), so
that face detection can start in worker processes while an encoder is still loading.
"""

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tripletface.errors import InputError
from tripletface.models.dlib_files import FACE_ENCODER, dlib_model_path

if TYPE_CHECKING:
    from tripletface.models.base import Encoder


class _Entry(NamedTuple):
    """Where an architecture lives ("module:Class") and the input load_encoder(name) builds it
    for: side in pixels and chip padding (None: whole images), like timm's default configs;
    ``weights``: the dlib model file its pretrained weights come from (None: random weights)."""

    target: str
    side: int
    padding: float | None
    weights: str | None = None


_BUILTIN: dict[str, _Entry] = {
    "compact": _Entry("compact:CompactNet", 64, None),
    "dlib-resnet": _Entry("dlib_resnet:DlibResNet", 150, 0.25, FACE_ENCODER),
    "inception-resnet-v1": _Entry("inception_resnet_v1:InceptionResnetV1", 160, None),
}


def list_encoders() -> list[str]:
    """Names of the registered encoder architectures, sorted."""
    return sorted(_BUILTIN)


def default_input(name: str | Path) -> tuple[int, float | None] | None:
    """(side, chip padding or None) that load_encoder(name) takes, known without loading it;
    None for a checkpoint, whose input is only known once it is read."""
    entry = None if _is_checkpoint(name) else _BUILTIN.get(str(name))
    return (entry.side, entry.padding) if entry is not None else None


def weights_file(name: str | Path) -> Path | None:
    """The file load_encoder(name) reads its weights from, found without importing torch: the
    checkpoint itself, or a pretrained encoder's model file; None for random weights."""
    if _is_checkpoint(name):
        return Path(name)
    entry = _BUILTIN.get(str(name))
    return dlib_model_path(entry.weights) if entry is not None and entry.weights else None


def encoder_class(name: str) -> "type[Encoder]":
    """The Encoder subclass registered under ``name``."""
    if name not in _BUILTIN:
        raise InputError(
            f"unknown encoder {name!r}: choose one of {', '.join(list_encoders())} "
            "or give the path of a checkpoint"
        )
    module, cls = _BUILTIN[name].target.split(":")
    return getattr(importlib.import_module(f"tripletface.models.{module}"), cls)


def create_encoder(name: str, **kwargs) -> "Encoder":
    """A freshly initialised encoder of architecture ``name`` (random weights)."""
    return encoder_class(name)(**kwargs)


def load_encoder(name: str | Path, **kwargs) -> "Encoder":
    """A ready encoder: a registered name (pretrained weights if it has any) or a checkpoint."""
    if _is_checkpoint(name):
        from tripletface.models.checkpoint import load_encoder_checkpoint

        return load_encoder_checkpoint(Path(name))
    cls = encoder_class(str(name))
    pretrained = getattr(cls, "pretrained", None)
    return pretrained(**kwargs) if pretrained is not None else cls(**kwargs)


def _is_checkpoint(name: str | Path) -> bool:
    """Whether load_encoder reads ``name`` as a checkpoint file rather than a registry name."""
    return Path(name).suffix == ".pt" or Path(name).is_file()


def __getattr__(name: str):
    if name == "Encoder":  # the base class, re-exported without importing torch up front
        from tripletface.models.base import Encoder

        return Encoder
    raise AttributeError(f"module 'tripletface.models' has no attribute {name!r}")


__all__ = [
    "Encoder",
    "create_encoder",
    "default_input",
    "encoder_class",
    "list_encoders",
    "load_encoder",
    "weights_file",
]
