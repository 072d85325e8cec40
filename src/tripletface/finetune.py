"""Fine-tuning a pretrained encoder with the triplet loss on aligned faces of real photos.

Training a face encoder from scratch takes millions of photos; FaceNet-style fine-tuning starts
from a network trained on them and adapts it with a small learning rate, keeping the early
stages (generic edges and textures, Yosinski et al. 2014) frozen, which also skips their
backward pass. The pieces here only prepare what ``tripletface.train.fit`` receives: the
pretrained module, a config whose ``freeze`` prefixes and ``encoder_kwargs`` let a resumed run
rebuild the same set-up, and the aligned-chips data set in the encoder's chip convention.
"""

from dataclasses import replace
from pathlib import Path

from torch import nn

from tripletface.data.chips import AlignedFaces
from tripletface.errors import InputError
from tripletface.faces.detect import FaceDetector
from tripletface.models import encoder_class
from tripletface.models.base import Encoder
from tripletface.train import TrainConfig

#: Learning rate of a fine-tuning run unless one is given: a tenth of training from scratch.
FINETUNE_LR = 1e-4


def has_pretrained_weights(name: str) -> bool:
    """Whether the registered encoder ``name`` ships pretrained weights (it then takes aligned
    face chips in its own convention, the input it was trained on)."""
    return hasattr(encoder_class(name), "pretrained")


def pretrained_encoder(name: str) -> Encoder:
    """The registered encoder ``name`` with its pretrained weights and unit-length outputs.

    The triplet loss and its margin are defined on the unit sphere (FaceNet), hence normalize.
    """
    if not has_pretrained_weights(name):
        raise InputError(
            f"encoder {name!r} has no pretrained weights: drop --pretrained or use dlib-resnet"
        )
    return encoder_class(name).pretrained(normalize=True)


def frozen_prefixes(model: nn.Module) -> list[str]:
    """Shortest module-name prefixes ("stem.", "stages.0.") covering every frozen parameter.

    A module is named when all its parameters are frozen and no enclosing module is named.
    """
    prefixes: list[str] = []
    for name, module in model.named_modules():
        parameters = list(module.parameters())
        if not name or not parameters or any(name.startswith(p) for p in prefixes):
            continue
        if not any(parameter.requires_grad for parameter in parameters):
            prefixes.append(f"{name}.")
    return prefixes


def finetune_setup(
    config: TrainConfig, freeze: int = 0, lr: float | None = None
) -> tuple[TrainConfig, Encoder]:
    """(config, encoder) to fine-tune the pretrained ``config.encoder`` with ``fit``.

    The stem and the first ``freeze`` stages stay fixed (recorded as ``config.freeze`` so that
    a resumed run freezes them too); ``lr`` defaults to FINETUNE_LR.
    """
    encoder = pretrained_encoder(config.encoder)
    if freeze:
        if not hasattr(encoder, "freeze"):
            raise InputError(f"encoder {config.encoder!r} has no stages to freeze: drop --freeze")
        encoder.freeze(freeze)
    config = replace(
        config,
        encoder_kwargs={**config.encoder_kwargs, **getattr(encoder, "init_kwargs", {})},
        freeze=sorted(set(config.freeze) | set(frozen_prefixes(encoder))),
        lr=FINETUNE_LR if lr is None else lr,
    )
    return config, encoder


def aligned_faces(
    root: str | Path,
    encoder_name: str,
    cache: str | Path | None = None,
    detector: FaceDetector | None = None,
    progress: bool = False,
    padding: float | None = None,
) -> AlignedFaces:
    """The photos under ROOT/PERSON/ as chips of the size and padding encoder_name expects
    (``padding`` overrides it, and gives chips to an encoder that takes whole images)."""
    cls = encoder_class(encoder_name)
    height, width = cls.input_size
    if height != width:
        raise InputError(f"encoder {encoder_name!r} takes {height} x {width} images, not square")
    padding = cls.chip_padding if padding is None else padding
    if padding is None:
        raise InputError(
            f"encoder {encoder_name!r} takes whole images, not aligned face chips: give a padding"
        )
    return AlignedFaces(root, height, padding, detector=detector, cache=cache, progress=progress)
