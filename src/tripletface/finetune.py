"""Fine-tuning a pretrained encoder with the triplet loss on aligned faces of real photos.

Training a face encoder from scratch takes millions of photos; FaceNet-style fine-tuning starts
from a network trained on them and adapts it with a small learning rate, keeping the early
stages (generic edges and textures, Yosinski et al. 2014) frozen, which also skips their
backward pass. The pieces here only prepare what ``tripletface.train.fit`` receives: the
pretrained module, a config whose ``freeze`` prefixes and ``encoder_kwargs`` let a resumed run
rebuild the same set-up, and the aligned-chips data set in the encoder's chip convention.

Fine-tuning on a few hundred persons easily forgets what millions taught (measured:
bench/orl_finetune.py, bench/finetune_celeba.py). ``finetune`` adds what the field uses against
it: after every step the trainable weights are pulled back toward the pretrained ones (L2-SP, Li,
Grandvalet and Davoine 2018, applied as a decoupled shrinkage), an embedding-distillation term
pulls each chip's embedding toward a target row (``losses.distillation_loss``), and persons held
apart from training decide when to stop and which weights to keep (early stopping): the
pretrained weights themselves when no step improved on them.

``finetune_chips`` is the whole recipe on one set of chips, as ``tripletface train --pretrained``
runs it: ``config.held_apart`` persons are drawn aside for early stopping; with a camera
condition (``config.condition``, see ``tripletface.data.conditions``) every training chip is
trained on both clean and in the condition, the camera's settings drawn anew every epoch
(``data.chips.CameraDraws``), the distillation targets are the starting network's embeddings of
the clean chips (the changed chip learns to land where the clean one did, Ge et al. 2018), and
early stopping scores pairs of held-apart chips in the condition, the pairs the camera will
give, refusing any weights that lose more than ``tolerance`` of TAR on their clean chips.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tripletface import metrics
from tripletface.data.chips import AlignedFaces, CameraDraws, ChipSet, in_condition
from tripletface.distances import pairwise_distances
from tripletface.errors import InputError
from tripletface.faces.detect import FaceDetector
from tripletface.models import encoder_class
from tripletface.models.base import Encoder
from tripletface.train import RunResult, TrainConfig, fit

#: Learning rate of a fine-tuning run unless one is given. Adam moves every weight by about the
#: learning rate per step and dlib-resnet's convolution weights are about 3e-3: 1e-4 and 1e-5 made
#: unseen persons worse, 1e-6 to 2e-6 improved them (bench/finetune_celeba.py, adapt_camera.py).
FINETUNE_LR = 2e-6
#: Learning rate and distillation weight (``finetune_setup``) and clean guard (``finetune_chips``'s
#: ``tolerance``) of a run that adapts to a camera (``config.condition``) unless given: faster
#: learning that may lose two points of held-apart clean TAR, held by stronger distillation.
#: Over three splits on masks they recovered 52% of the cost with clean photos enrolled, against
#: 34% at FINETUNE_LR, weight 1 and a one-point guard; on low resolution 9% against 17%, a
#: difference of about one spread, both far short of what masks gain (bench/adapt_camera.py).
CAMERA_LR, CAMERA_DISTILL, CAMERA_TOLERANCE = 6e-6, 3.0, 0.02


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
    config: TrainConfig, freeze: int = 0, lr: float | None = None, distill: float | None = None
) -> tuple[TrainConfig, Encoder]:
    """(config, encoder) to fine-tune the pretrained ``config.encoder`` with ``fit``.

    The stem and the first ``freeze`` stages stay fixed (recorded as ``config.freeze`` so that
    a resumed run freezes them too). Unless given, a run that adapts to a camera condition
    (``config.condition``) takes CAMERA_LR and CAMERA_DISTILL, another FINETUNE_LR and the
    config's own distillation weight.
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
        lr=(CAMERA_LR if config.condition else FINETUNE_LR) if lr is None else lr,
        distill=(CAMERA_DISTILL if config.condition else config.distill)
        if distill is None
        else distill,
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


def unit_embeddings(encoder: Encoder, chips: ChipSet) -> torch.Tensor:
    """N x D unit-length float32 embeddings of the chips (eval mode, no gradients)."""
    return nn.functional.normalize(encoder.embed(chips.chips), dim=1)


def held_apart_score(encoder: Encoder, chips: ChipSet, far: float = 1e-3) -> float:
    """TAR at FAR ``far`` over all pairs of the chips' persons: what early stopping maximises."""
    embeddings = nn.functional.normalize(encoder.embed(chips.chips).double(), dim=1)
    squared = pairwise_distances(embeddings).numpy()
    first, second = np.triu_indices(len(squared), k=1)
    labels = np.asarray(chips.labels)
    tar, _ = metrics.val_at_far(squared[first, second], labels[first] == labels[second], far)
    return tar


def guarded_score(
    encoder: Encoder, changed: ChipSet, clean: ChipSet, floor: float, far: float = 1e-3
) -> float:
    """``held_apart_score`` of the changed chips, or -inf when that of their clean versions
    falls below ``floor`` (weights that forget clean photos are never kept)."""
    if held_apart_score(encoder, clean, far) < floor:
        return -np.inf
    return held_apart_score(encoder, changed, far)


def doubled(first: ChipSet, second: ChipSet) -> ChipSet:
    """The items of both chip sets of the same persons, ``first``'s before ``second``'s."""
    return ChipSet(
        torch.cat([first.chips, second.chips]),
        first.labels + second.labels,
        first.classes,
        first.paths + second.paths,
    )


def held_apart_persons(chips: ChipSet, count: int, seed: int) -> list[str]:
    """``count`` person names drawn with ``seed``, leaving at least 2 persons to train on."""
    if not 2 <= count <= len(chips.classes) - 2:
        raise InputError(
            f"cannot hold {count} of {len(chips.classes)} persons apart: hold 2 or more apart "
            "and leave 2 or more to train on"
        )
    order = np.random.default_rng(seed).permutation(len(chips.classes))
    return sorted(chips.classes[i] for i in order[:count])


@dataclass
class FinetuneResult:
    """The encoder with the kept weights, the run, and the held-apart score at each check
    ((step, score), step 0 the pretrained weights); ``best_step`` is the step kept and
    ``trained_on`` the data set the run's batches were drawn from."""

    encoder: Encoder
    run: RunResult
    scores: list[tuple[int, float]] = field(default_factory=list)
    best_step: int = 0
    trained_on: ChipSet | None = None


def finetune(
    config: TrainConfig,
    train: ChipSet,
    encoder: Encoder,
    held_apart: ChipSet | None = None,
    every: int = 25,
    patience: int = 3,
    pull: float = 0.0,
    score: Callable[[Encoder, ChipSet], float] = held_apart_score,
    progress: bool = False,
    targets: torch.Tensor | None = None,
) -> FinetuneResult:
    """``fit`` with anti-forgetting: ``pull`` in [0, 1) moves the trainable weights that share
    of the way back to the pretrained ones after every step; with ``held_apart`` persons (never
    trained on), ``score`` is checked every ``every`` steps and at the end, the run stops after
    ``patience`` checks without a better score, and the best weights (possibly the pretrained
    ones) are kept. ``targets`` are the distillation targets of ``train``'s items (``fit``)."""
    if not 0 <= pull < 1:
        raise InputError(f"pull = {pull}: give a share in [0, 1), e.g. 1e-3")
    if every < 1 or patience < 1:
        raise InputError(f"every = {every} and patience = {patience} must be >= 1")
    start = {n: p.detach().clone() for n, p in encoder.named_parameters() if p.requires_grad}
    scores = [(0, score(encoder, held_apart))] if held_apart is not None else []
    best = {"score": scores[0][1] if scores else -np.inf, "step": 0, "state": None, "stale": 0}

    def check(step: int) -> bool:
        value = score(encoder, held_apart)
        scores.append((step, value))
        if value > best["score"]:
            best.update(score=value, step=step, stale=0)
            best["state"] = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
            return False
        best["stale"] += 1
        return best["stale"] >= patience

    def after_step(record: dict) -> bool:
        if pull:
            with torch.no_grad():
                for name, parameter in encoder.named_parameters():
                    if name in start:
                        parameter.lerp_(start[name], pull)
        if held_apart is not None and record["step"] % every == 0:
            return check(record["step"])
        return False

    run = fit(config, train, encoder, progress=progress, callback=after_step, targets=targets)
    if held_apart is not None:
        if not scores or scores[-1][0] != run.step:
            check(run.step)
        if best["state"] is None:  # nothing beat the pretrained weights
            encoder.load_state_dict({**encoder.state_dict(), **start})
        else:
            encoder.load_state_dict(best["state"])
    return FinetuneResult(encoder.eval(), run, scores, best["step"], train)


def finetune_chips(
    config: TrainConfig,
    chips: ChipSet,
    encoder: Encoder,
    changed: ChipSet | None = None,
    every: int = 25,
    patience: int = 3,
    pull: float = 0.0,
    tolerance: float | None = None,
    progress: bool = False,
    redraw: bool = True,
) -> FinetuneResult:
    """``finetune`` on the chips of several persons the way the module docstring describes.

    ``changed`` holds the same items in ``config.condition`` (made here with ``config.seed``
    when None); held-apart persons are scored on it, and so are training persons trained on it
    unless ``redraw``, where their camera is drawn anew every epoch (``data.chips.CameraDraws``).
    The distillation targets (``config.distill`` > 0) are the unit embeddings that
    ``encoder``, as given, computes for the clean chips. ``tolerance`` is how much held-apart TAR
    on clean chips (a share, 0.01 = 1 point) a camera-adapted network may lose (CAMERA_TOLERANCE
    unless given).
    """
    tolerance = CAMERA_TOLERANCE if tolerance is None else tolerance
    if config.condition is not None and changed is None:
        changed = in_condition(chips, config.condition, config.seed, encoder.chip_padding)
    if changed is not None and (config.condition is None or len(changed) != len(chips)):
        raise InputError("changed chips need config.condition and one per clean chip")
    held = held_apart_persons(chips, config.held_apart, config.seed) if config.held_apart else []
    trained = [name for name in chips.classes if name not in held]

    train = chips.persons(trained)
    targets = unit_embeddings(encoder, train) if config.distill else None
    if changed is not None:
        # Redrawn, the training persons' changed chips are made anew: no copy of them is kept.
        train = (
            CameraDraws(train, config.condition, config.seed, encoder.chip_padding)
            if redraw
            else doubled(train, changed.persons(trained))
        )
        targets = None if targets is None else torch.cat([targets, targets])
    score, held_set = held_apart_score, None
    if held:
        held_set = chips.persons(held)
        if changed is not None:
            floor = held_apart_score(encoder, held_set) - tolerance
            score = partial(guarded_score, clean=held_set, floor=floor)
            held_set = changed.persons(held)
    return finetune(
        config, train, encoder, held_set, every, patience, pull, score, progress, targets
    )
