"""Training an encoder on the triplet loss with online triplet selection over P x K batches.

The step is a function of (model, optimizer, batch, config): embeddings of the local batch are
gathered over all ranks when torch.distributed runs, triplets are mined on that global batch,
and the loss is back-propagated through the local shard (see ``tripletface.distributed``).
``fit`` adds the loop around it: sampling, augmentation, the learning-rate schedule, a progress
bar, per-step metrics in ``RUN/metrics.csv``, atomic checkpoints in ``RUN/last.pt`` and resuming.
"""

import copy
import csv
import inspect
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tripletface.cache import write_atomic
from tripletface.data.conditions import check_condition
from tripletface.data.folders import resize
from tripletface.distances import pairwise_distances
from tripletface.distributed import (
    all_gather_embeddings,
    is_distributed,
    is_main_process,
    rank,
    world_size,
)
from tripletface.errors import InputError
from tripletface.losses import batch_triplet_loss, distillation_loss
from tripletface.mining import check_strategy, mine_triplets
from tripletface.models import create_encoder, encoder_class
from tripletface.models.base import Encoder
from tripletface.models.checkpoint import (
    architecture_name,
    load_checkpoint,
    save_checkpoint,
    unwrap,
)
from tripletface.sampling import PKSampler

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step", "constant")
#: Number formats of the forward pass; "bfloat16" autocasts convolutions and matrix products
#: (about 1.7x faster on CPUs with AVX-512 BF16), the loss and the weights stay float32.
PRECISIONS = ("float32", "bfloat16")
#: Columns of RUN/metrics.csv, one row per step.
METRICS = (
    "step",
    "epoch",
    "loss",
    "distillation",
    "active_fraction",
    "considered",
    "active",
    "mean_ap",
    "mean_an",
    "spread",
    "lr",
    "images_per_s",
    "seconds",
)
#: Mean pairwise squared distance below which the embeddings count as collapsed to one point.
COLLAPSE_SPREAD = 1e-3


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint."""

    encoder: str = "compact"
    encoder_kwargs: dict = field(default_factory=dict)
    #: Side of the square images the encoder is built for; None keeps the encoder's default.
    size: int | None = None
    p: int = 32
    k: int = 4
    strategy: str = "semihard"
    margin: float = 0.2
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    #: Length of the run: ``steps`` optimizer steps, or ``epochs`` passes over the data (not both).
    steps: int | None = 1000
    epochs: int | None = None
    seed: int = 0
    threads: int | None = None
    #: Run folder for metrics.csv and last.pt; None writes nothing.
    out: str | None = None
    checkpoint_every: int = 200
    #: Random horizontal flips and shifts of up to 1/16 of the side (folder data).
    augment: bool = False
    #: Data-loading worker processes for data sets that decode images on access.
    workers: int = 0
    #: Parameter-name prefixes that stay frozen (fine-tuning).
    freeze: list[str] = field(default_factory=list)
    #: Parameter-name prefix -> learning-rate multiplier (the longest matching prefix wins).
    lr_scale: dict[str, float] = field(default_factory=dict)
    #: Number format of the forward pass (PRECISIONS).
    precision: str = "float32"
    #: Weight of the distillation term added to the triplet loss: the mean squared distance
    #: from each chip's embedding to its target row (``fit``'s ``targets``).
    distill: float = 0.0
    #: Fine-tuning (``tripletface.finetune``): the camera condition (data.conditions) simulated
    #: on a copy of every training chip, and how many persons are held apart for early stopping.
    condition: str | None = None
    held_apart: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config from a checkpoint's dict, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def check_config(config: TrainConfig) -> None:
    """InputError naming the first setting that cannot work."""
    check_strategy(config.strategy)
    if config.size is not None:
        _check_size(config.encoder, config.size)
    problems = [
        (config.p < 2, f"p = {config.p}: a batch needs at least 2 persons"),
        (config.k < 2, f"k = {config.k}: a person needs at least 2 images for a positive"),
        (config.margin < 0, f"margin = {config.margin} must be >= 0"),
        (not config.lr > 0, f"lr = {config.lr} must be > 0"),
        (config.weight_decay < 0, f"weight decay = {config.weight_decay} must be >= 0"),
        (config.optimizer not in OPTIMIZERS, f"optimizer {config.optimizer!r}: use adam or sgd"),
        (
            config.schedule not in SCHEDULES,
            f"schedule {config.schedule!r}: use one of {', '.join(SCHEDULES)}",
        ),
        ((config.steps is None) == (config.epochs is None), "give either steps or epochs"),
        (config.steps is not None and config.steps < 1, f"steps = {config.steps} must be >= 1"),
        (config.epochs is not None and config.epochs < 1, f"epochs = {config.epochs} must be >= 1"),
        (config.size is not None and config.size < 16, f"size = {config.size} must be >= 16"),
        (config.checkpoint_every < 1, "checkpoint_every must be >= 1"),
        (config.warmup_steps < 0, "warmup_steps must be >= 0"),
        (
            config.precision not in PRECISIONS,
            f"precision {config.precision!r}: use one of {', '.join(PRECISIONS)}",
        ),
        (not config.distill >= 0, f"distill = {config.distill} must be >= 0"),
        (config.held_apart < 0, f"held_apart = {config.held_apart} must be >= 0"),
        (
            config.threads is not None and config.threads < 1,
            f"threads = {config.threads} must be >= 1 (or unset: torch's default)",
        ),
    ]
    for failed, message in problems:
        if failed:
            raise InputError(f"training config: {message}")
    if config.condition is not None:
        check_condition(config.condition)


def _check_size(encoder: str, size: int) -> None:
    """InputError when ``encoder`` is built for one input only, so that no ``size`` applies."""
    cls = encoder_class(encoder)
    if "input_size" not in inspect.signature(cls).parameters:
        height, width = cls.input_size
        raise InputError(
            f"training config: size = {size}: encoder {encoder} takes {height} x {width} "
            "images only; drop --size"
        )


def total_steps(config: TrainConfig, steps_per_epoch: int | None = None) -> int | None:
    """The steps the run ``config`` asks for: its ``steps``, or ``epochs`` passes of
    ``steps_per_epoch`` (None while that is not known, before the data is loaded)."""
    if config.steps is not None:
        return config.steps
    return None if steps_per_epoch is None else config.epochs * steps_per_epoch


def check_steps_left(
    checkpoint: Path, step: int, config: TrainConfig, steps_per_epoch: int | None = None
) -> None:
    """InputError unless a run resumed at ``step`` from ``checkpoint`` has steps left of
    ``total_steps(config, steps_per_epoch)``; nothing to check while that is not known, so that
    the CLI can call it before the data loads and ``fit`` again once it has."""
    total = total_steps(config, steps_per_epoch)
    if total is None or step < total:
        return
    if config.steps is not None:
        raise InputError(f"{checkpoint} is at step {step} already: give --steps above {step}")
    raise InputError(
        f"{checkpoint} is at step {step} already and --epochs {config.epochs} ends at step "
        f"{total}: give more --epochs"
    )


def lr_factor(schedule: str, step: int, total: int, warmup: int = 0) -> float:
    """Multiplier of the base learning rate at 0-based ``step`` of ``total``.

    Linear warm-up over ``warmup`` steps, then "constant", "cosine" (half a cosine down to 0 at
    the last step) or "step" (x0.1 at 50% and again at 75% of the run).
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return 1.0


def embedding_spread(embeddings: torch.Tensor) -> float:
    """Mean squared Euclidean distance over all ordered pairs of rows (0 when all coincide).

    Equals 2 * mean ||x_i - mean||^2, computed in O(N D) instead of O(N^2 D).
    """
    x = embeddings.detach().double()
    return float(2.0 * (x - x.mean(0)).square().sum(1).mean())


def training_forward(model: nn.Module, images: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """N x D float32 embeddings of N images as a training step computes them: in the model's
    current mode, the convolutions in ``config.precision``."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bfloat16"):
        return model(images).float()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    targets: torch.Tensor | None = None,
) -> dict[str, float]:
    """One optimizer step on a batch mined globally over ranks; returns the TripletStats and loss.

    With ``targets`` (one row per image) the loss adds ``config.distill`` times the local
    batch's distillation term, also in the record (``distillation``, else 0). The record adds
    ``spread``, the mean pairwise squared distance of the global batch.
    """
    model.train()
    local = training_forward(model, images, config)
    embeddings, labels = all_gather_embeddings(local, labels)
    loss, stats = batch_triplet_loss(
        embeddings, labels, strategy=config.strategy, margin=config.margin
    )
    # DistributedDataParallel averages gradients over ranks, the global loss needs their sum;
    # the distillation term is a mean over each rank's rows, which that average keeps.
    total = loss * world_size()
    distillation = torch.zeros(())
    if targets is not None:
        distillation = distillation_loss(local, targets)
        total = total + config.distill * distillation
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return {
        **stats.as_dict(),
        "loss": float(loss.detach()),
        "distillation": float(distillation.detach()),
        "spread": embedding_spread(embeddings),
    }


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts (edge pixels repeated) of N x 3 x H x W uint8 images."""
    n, _, height, width = images.shape
    pad = max(1, min(height, width) // 16)
    flips = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flips[:, None, None, None], images.flip(-1), images)
    padded = nn.functional.pad(images.float(), (pad, pad, pad, pad), mode="replicate")
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(shifts)]
    ).to(images.dtype)


def _batch(items: Sequence[tuple[torch.Tensor, int]], size: tuple[int, int]):
    """Stack (image, label) items into N x 3 x H x W uint8 images at ``size`` and N labels."""
    images = torch.stack([resize(image, size) for image, _ in items])
    return images, torch.tensor([label for _, label in items], dtype=torch.long)


def _loader(
    dataset: Dataset, size: tuple[int, int], workers: int
) -> Callable[[list[list[int]]], Iterable[tuple[torch.Tensor, torch.Tensor]]]:
    """Maps index lists to (images, labels) batches; in memory if the data set has tensors()."""
    if hasattr(dataset, "tensors"):
        images, labels = dataset.tensors()
        images, labels = resize(images, size), torch.as_tensor(labels, dtype=torch.long)
        return lambda batches: (
            (images[index], labels[index]) for index in map(torch.tensor, batches)
        )
    return lambda batches: DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=partial(_batch, size=size),
        # Its own generator: a loader drawing from the global one would shift it on resume.
        generator=torch.Generator(),
    )


def _param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Trainable parameters grouped by learning-rate multiplier; frozen ones are switched off."""
    groups: dict[float, list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if any(name.startswith(prefix) for prefix in config.freeze):
            parameter.requires_grad_(False)
        if not parameter.requires_grad:
            continue
        matches = [prefix for prefix in config.lr_scale if name.startswith(prefix)]
        scale = config.lr_scale[max(matches, key=len)] if matches else 1.0
        groups.setdefault(scale, []).append(parameter)
    if not groups:
        raise InputError("training config: every parameter is frozen, nothing to train")
    return [{"params": params, "lr": config.lr * scale} for scale, params in groups.items()]


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD with momentum over the trainable parameter groups."""
    groups = _param_groups(model, config)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _encoder(config: TrainConfig, encoder: Encoder | str | None) -> Encoder:
    """The encoder to train: the module given, or a new one of the configured architecture."""
    if isinstance(encoder, nn.Module):
        return encoder
    kwargs = dict(config.encoder_kwargs)
    if config.size is not None:
        kwargs["input_size"] = config.size
    return create_encoder(encoder or config.encoder, **kwargs)


def initial_encoder(config: TrainConfig) -> Encoder:
    """The encoder ``fit(config, dataset)`` starts from when given none: the configured
    architecture, its weights drawn under ``config.seed`` (which reseeds torch's generator)."""
    torch.manual_seed(config.seed)
    return _encoder(config, None)


def _epoch_batches(sampler: PKSampler, epoch: int) -> list[list[int]]:
    """This rank's P x K index batches of ``epoch``, the same whenever drawn again."""
    sampler.set_epoch(epoch)
    return [list(batch) for batch in sampler]


def _serve_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell a data set that draws its items anew each epoch (``set_epoch``) which one it serves."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def step_batch(config: TrainConfig, dataset: Dataset, step: int) -> list[int]:
    """Indices of the batch that ``fit`` trains 1-based ``step`` on (one process, no resume);
    the data set is set to that step's epoch, as ``fit`` sets it, so its items are the same."""
    sampler = PKSampler(dataset.labels, config.p, config.k, config.seed)
    epoch, index = divmod(step - 1, len(sampler))
    _serve_epoch(dataset, epoch)
    return _epoch_batches(sampler, epoch)[index]


#: A triplet of a batch: (anchor, positive, negative) rows, d(a,p) and d(a,n).
ChosenTriplet = tuple[int, int, int, float, float]


def chosen_triplets(
    encoder: Encoder, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig, count: int
) -> list[ChosenTriplet]:
    """The triplets ``config.strategy`` selects in a batch, as a training step would (training
    mode: batch statistics; ``encoder`` itself untouched): the first triplet of each of the first
    ``count`` anchors of distinct persons."""
    model = copy.deepcopy(unwrap(encoder)).train()
    with torch.no_grad():
        embeddings = training_forward(model, images, config)
    generator = torch.Generator().manual_seed(config.seed)
    a, p, n = mine_triplets(embeddings, labels, config.strategy, config.margin, generator)
    distances = pairwise_distances(embeddings)
    chosen, persons = [], set()
    for anchor, positive, negative in zip(a.tolist(), p.tolist(), n.tolist(), strict=True):
        if len(chosen) < count and int(labels[anchor]) not in persons:
            persons.add(int(labels[anchor]))
            d_ap, d_an = distances[anchor, positive], distances[anchor, negative]
            chosen.append((anchor, positive, negative, float(d_ap), float(d_an)))
    return chosen


def triplet_rows(
    dataset: Dataset, runs: dict[str, tuple[Encoder, "RunResult"]], count: int
) -> dict[str, list[tuple]]:
    """Rows for plots.plot_triplets of each run {name: (initial encoder, result)}: the triplets it
    chose in its first batch with the initial weights and in its last batch with the trained
    ones, titled "NAME", newline, "step S"; each (anchor, positive, negative H x W x 3 uint8
    pixels, d(a,p), d(a,n))."""
    rows = {}
    for name, (initial, run) in runs.items():
        size = tuple(run.encoder.input_size)
        for step, encoder in ((1, initial), (run.step, run.encoder)):
            batch = step_batch(run.config, dataset, step)
            images, labels = _batch([dataset[i] for i in batch], size)
            pixels = images.permute(0, 2, 3, 1).numpy()
            triplets = chosen_triplets(encoder, images, labels, run.config, count)
            rows[f"{name}\nstep {step}"] = [
                (pixels[a], pixels[p], pixels[n], d_ap, d_an) for a, p, n, d_ap, d_an in triplets
            ]
    return rows


class MetricsLog:
    """RUN/metrics.csv, one row per step, appended and flushed as training goes."""

    def __init__(self, path: Path, resume_after: int | None):
        self.path = path
        kept = []
        if resume_after is not None and path.is_file():
            with path.open(newline="") as stream:
                kept = [row for row in csv.DictReader(stream) if int(row["step"]) <= resume_after]

        def header_and_kept(stream) -> None:
            writer = csv.DictWriter(stream, METRICS, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)

        # Rewritten atomically so that steps after the checkpoint are not logged twice.
        write_atomic(path, header_and_kept, mode="w")
        self.stream = path.open("a", newline="")
        self.writer = csv.DictWriter(
            self.stream, METRICS, extrasaction="ignore", lineterminator="\n"
        )

    def write(self, record: dict) -> None:
        self.writer.writerow({key: _csv_value(record[key]) for key in METRICS})
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()


def _csv_value(value):
    """Floats with 6 significant digits, the rest as is."""
    return f"{value:.6g}" if isinstance(value, float) else value


def _tensorboard(out: Path):
    """A TensorBoard SummaryWriter when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _restore(checkpoint: Path | None, model, optimizer, scheduler) -> tuple[int, int, int]:
    """Load the run state of ``checkpoint``; returns (step, epoch, batches done in the epoch)."""
    if checkpoint is None or not checkpoint.is_file():
        raise InputError(f"cannot resume: no checkpoint {checkpoint}; train without --resume")
    state = load_checkpoint(checkpoint)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # A resume may change the run's length: the saved lr belongs to the old schedule.
        for group, base, factor in zip(
            optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = base * factor(scheduler.last_epoch)
        torch.set_rng_state(state["extra"]["rng"])
        return state["step"], state["epoch"], state["extra"]["batch"]
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"cannot resume from {checkpoint}: it holds another encoder or optimizer "
            f"({str(error).splitlines()[0][:100]}); start a new run in another folder"
        ) from None


class _Report:
    """Where each step's record goes: the progress bar, RUN/metrics.csv and TensorBoard."""

    def __init__(self, out: Path | None, total: int, step: int, resume: bool, progress: bool):
        self.log = self.writer = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            self.log = MetricsLog(out / "metrics.csv", step if resume else None)
            self.writer = _tensorboard(out)
        self.bar = tqdm(total=total, initial=step, unit="step", disable=not progress)

    def step(self, record: dict) -> None:
        if self.log:
            self.log.write(record)
        if self.writer:
            for key in ("loss", "active_fraction", "mean_ap", "mean_an", "lr"):
                self.writer.add_scalar(f"train/{key}", record[key], record["step"])
        self.bar.set_postfix(
            loss=f"{record['loss']:.4f}",
            active=f"{record['active_fraction']:.1%}",
            img_s=f"{record['images_per_s']:.0f}",
            refresh=False,
        )
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
        if self.log:
            self.log.close()
        if self.writer:
            self.writer.close()


@dataclass
class RunResult:
    """What ``fit`` returns: the trained encoder (eval mode) and the run's figures."""

    encoder: Encoder
    config: TrainConfig
    step: int
    epoch: int
    seconds: float
    history: list[dict]
    checkpoint: Path | None
    collapsed: bool

    def summary(self) -> dict:
        """The figures as plain JSON-ready values (no encoder, no per-step history)."""
        last = self.history[-1] if self.history else {}
        rates = [row["images_per_s"] for row in self.history]
        return {
            "step": self.step,
            "epoch": self.epoch,
            "seconds": round(self.seconds, 3),
            "loss": last.get("loss"),
            "active_fraction": last.get("active_fraction"),
            "images_per_s": sum(rates) / len(rates) if rates else None,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "collapsed": self.collapsed,
        }


def fit(
    config: TrainConfig,
    dataset: Dataset,
    encoder: Encoder | str | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[dict], bool | None] | None = None,
    targets: torch.Tensor | None = None,
) -> RunResult:
    """Train an encoder on ``dataset`` (items (uint8 3 x H x W, label), attribute ``labels``;
    a ``set_epoch(epoch)`` method, if it has one, is called before each epoch's batches).

    ``encoder`` is a built module (e.g. pretrained, for fine-tuning), a registry name, or None
    for ``config.encoder``. With ``resume`` the run continues exactly from ``config.out``/last.pt.
    ``callback`` receives each step's record; returning True stops the run after a checkpoint.
    ``targets`` (len(dataset) x D, the distillation target of each item) is required when
    ``config.distill`` > 0 and ignored otherwise.
    Under torch.distributed every rank calls fit; only rank 0 writes files and shows progress.
    """
    check_config(config)
    if config.distill and (targets is None or len(targets) != len(dataset)):
        raise InputError(
            f"training config: distill = {config.distill} needs one target embedding per "
            f"training image ({len(dataset)}), got {'none' if targets is None else len(targets)}"
        )
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _fit(config, dataset, encoder, resume, progress, callback, targets)
    finally:
        torch.set_num_threads(threads)


def _fit(
    config: TrainConfig,
    dataset: Dataset,
    encoder: Encoder | str | None,
    resume: bool,
    progress: bool,
    callback: Callable[[dict], bool | None] | None,
    targets: torch.Tensor | None,
) -> RunResult:
    """fit() once the thread count is set."""
    torch.manual_seed(config.seed)
    model = _encoder(config, encoder)
    out = Path(config.out) if config.out else None
    checkpoint = out / "last.pt" if out else None
    if checkpoint is not None:
        config = replace(config, encoder=architecture_name(model))
    sampler = PKSampler(
        dataset.labels, config.p, config.k, config.seed, num_replicas=world_size(), rank=rank()
    )
    total = total_steps(config, len(sampler))
    load = _loader(dataset, tuple(model.input_size), config.workers)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, config.schedule, total=total, warmup=config.warmup_steps)
    )
    step, epoch, skip = _restore(checkpoint, model, optimizer, scheduler) if resume else (0, 0, 0)
    if resume:
        check_steps_left(checkpoint, step, config, len(sampler))
    main = is_main_process()
    report = _Report(out if main else None, total, step, resume, progress and main)
    trained = DistributedDataParallel(model) if is_distributed() else model
    history: list[dict] = []
    collapsed, stop, consistent = False, False, True
    started = time.perf_counter()
    targets = targets.float() if config.distill and targets is not None else None

    def save() -> None:
        if checkpoint is not None and main:
            save_checkpoint(
                checkpoint,
                model,
                optimizer,
                scheduler,
                config=asdict(config),
                epoch=epoch,
                step=step,
                metrics=history[-1] if history else {},
                extra={"batch": skip, "rng": torch.get_rng_state()},
            )

    try:
        while step < total and not stop:
            batches = _epoch_batches(sampler, epoch)
            _serve_epoch(dataset, epoch)
            tick = time.perf_counter()
            for index, (images, batch_labels) in zip(
                batches[skip:], load(batches[skip:]), strict=True
            ):
                if config.augment:
                    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
                    images = augment(images, generator)
                lr = optimizer.param_groups[0]["lr"]
                consistent = False
                wanted = None if targets is None else targets[index]
                record = train_step(trained, optimizer, images, batch_labels, config, wanted)
                scheduler.step()
                step, skip, consistent = step + 1, skip + 1, True
                now = time.perf_counter()
                record.update(
                    step=step,
                    epoch=epoch,
                    lr=lr,
                    images_per_s=len(images) * world_size() / (now - tick),
                    seconds=now - started,
                )
                tick = now
                history.append(record)
                if record["spread"] < COLLAPSE_SPREAD and not collapsed:
                    collapsed = True
                    warnings.warn(
                        f"embeddings collapsed at step {step}: mean pairwise squared distance "
                        f"{record['spread']:.2g}; lower the learning rate or use semihard "
                        "selection instead of hard",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                report.step(record)
                stop = bool(callback(record)) if callback else False
                if step >= total or stop:
                    break
                if step % config.checkpoint_every == 0:
                    save()
            else:
                epoch, skip = epoch + 1, 0
        save()
    except KeyboardInterrupt:
        # Only a state between two steps resumes exactly; otherwise the last checkpoint stands.
        if consistent:
            save()
        raise
    finally:
        report.close()
    return RunResult(
        encoder=unwrap(model).eval(),
        config=config,
        step=step,
        epoch=epoch,
        seconds=time.perf_counter() - started,
        history=history,
        checkpoint=checkpoint if checkpoint and main else None,
        collapsed=collapsed,
    )
