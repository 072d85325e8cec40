"""Encoder architectures by name. A new architecture is one file plus one line in ``_BUILTIN``."""

import importlib
from pathlib import Path

from tripletface.errors import InputError
from tripletface.models.base import Encoder

# name -> "module:Class"; imported on first use so that `import tripletface` stays light.
_BUILTIN: dict[str, str] = {
    "compact": "compact:CompactNet",
    "dlib-resnet": "dlib_resnet:DlibResNet",
    "inception-resnet-v1": "inception_resnet_v1:InceptionResnetV1",
}


def list_encoders() -> list[str]:
    """Names of the registered encoder architectures, sorted."""
    return sorted(_BUILTIN)


def encoder_class(name: str) -> type[Encoder]:
    """The Encoder subclass registered under ``name``."""
    if name not in _BUILTIN:
        raise InputError(
            f"unknown encoder {name!r}: choose one of {', '.join(list_encoders())} "
            "or give the path of a checkpoint"
        )
    module, cls = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(f"tripletface.models.{module}"), cls)


def create_encoder(name: str, **kwargs) -> Encoder:
    """A freshly initialised encoder of architecture ``name`` (random weights)."""
    return encoder_class(name)(**kwargs)


def load_encoder(name: str | Path, **kwargs) -> Encoder:
    """A ready encoder: a registered name (pretrained weights if it has any) or a checkpoint."""
    if Path(name).suffix == ".pt" or Path(name).is_file():
        from tripletface.models.checkpoint import load_encoder_checkpoint

        return load_encoder_checkpoint(Path(name))
    cls = encoder_class(str(name))
    pretrained = getattr(cls, "pretrained", None)
    return pretrained(**kwargs) if pretrained is not None else cls(**kwargs)


__all__ = ["Encoder", "create_encoder", "encoder_class", "list_encoders", "load_encoder"]
