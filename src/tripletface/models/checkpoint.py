"""Training checkpoints: an encoder's architecture, weights and the state needed to resume.

A checkpoint is a ``torch.save`` dictionary that ``torch.load(weights_only=True)`` can read, so
opening one never runs code from the file. Keys: ``format``, ``architecture`` (registry name),
``kwargs`` (constructor arguments), ``model`` (state dict), ``optimizer``, ``scheduler``,
``config``, ``epoch``, ``step``, ``metrics``, ``extra`` (e.g. random-generator states).
"""

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tripletface.cache import write_atomic
from tripletface.errors import InputError
from tripletface.models.base import Encoder

FORMAT = "tripletface-checkpoint-1"


def unwrap(model: nn.Module) -> nn.Module:
    """The encoder inside a DistributedDataParallel (or DataParallel) wrapper, else the model."""
    return getattr(model, "module", model)


def architecture_name(model: nn.Module) -> str:
    """The registry name of the model's class, so that the checkpoint can rebuild it."""
    from tripletface import models

    cls = type(unwrap(model))
    for name in models.list_encoders():
        if models.encoder_class(name) is cls:
            return name
    raise InputError(
        f"cannot checkpoint a {cls.__name__}: it is not a registered encoder "
        "(add one line to _BUILTIN in tripletface/models/__init__.py)"
    )


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    config: dict | None = None,
    epoch: int = 0,
    step: int = 0,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write the checkpoint atomically (temporary file in the same folder, then os.replace).

    The model's constructor arguments come from its ``init_kwargs`` attribute (empty if absent).
    """
    path = Path(path)
    encoder = unwrap(model)
    state = {
        "format": FORMAT,
        "architecture": architecture_name(encoder),
        "kwargs": dict(getattr(encoder, "init_kwargs", {})),
        "model": encoder.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "config": dict(config or {}),
        "epoch": int(epoch),
        "step": int(step),
        "metrics": dict(metrics or {}),
        "extra": dict(extra or {}),
    }
    return write_atomic(path, partial(torch.save, state))


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint dictionary on the CPU; InputError naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist: give the path of a .pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(
            f"checkpoint {path} is unreadable ({reason[:120]}): it is corrupt or not a "
            "tripletface checkpoint; train again or give another file"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(
            f"checkpoint {path} is not a tripletface checkpoint (format {FORMAT} expected): "
            "give a file written by `tripletface train`"
        )
    return state


def load_encoder_checkpoint(path: str | Path) -> Encoder:
    """The trained encoder stored in a checkpoint, in eval mode."""
    from tripletface.models import create_encoder

    state = load_checkpoint(path)
    try:
        encoder = create_encoder(state["architecture"], **state["kwargs"])
        encoder.load_state_dict(state["model"])
    except (InputError, KeyError, TypeError, ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0]
        raise InputError(
            f"checkpoint {path} does not match encoder {state.get('architecture')!r} "
            f"({reason[:120]}): it was written by another version; train again"
        ) from None
    return encoder.eval()
