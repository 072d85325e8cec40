"""The seed's whole story on built-in synthetic faces, offline, in minutes on a 2-core CPU.

Renders training persons and a disjoint set of unseen persons; measures two baselines on the
unseen ones (nearest neighbour on raw pixels, the untrained encoder); trains the compact encoder
twice from the same initial weights on the same batches, once on random triplets and once with
semi-hard selection (Schroff et al. 2015, "FaceNet", section 3.2), both at once in two worker
processes; evaluates both on the unseen persons; writes the plots and the pictures of the lesson
(the triplets each selection chose, t-SNE maps of unseen persons); and shows one-shot
recognition: one picture enrolled per person, new pictures of them and of strangers (persons
never enrolled, lookalikes among them) identified.
Every figure comes from the run.
"""

import copy
import resource
import time
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tripletface.data.synthetic import SyntheticFaces
from tripletface.errors import InputError
from tripletface.evaluate import EvaluationReport, evaluate
from tripletface.metrics import roc_curve
from tripletface.models import create_encoder
from tripletface.models.base import Encoder
from tripletface.search import ExactIndex
from tripletface.train import (
    PRECISIONS,
    RunResult,
    TrainConfig,
    fit,
    triplet_rows,
)
from tripletface.workers import worker_pool

#: The two triplet selections compared on the same budget, in the order they are trained.
STRATEGIES = ("random", "semihard")
#: Persons per family of lookalikes (SyntheticFaces' default); sets start at a family boundary.
FAMILY_SIZE = 4
#: Stretches of training over which the mean active-triplet fraction is reported.
ACTIVE_POINTS = 5
#: Triplets drawn per strategy and moment in triplets.png.
TRIPLETS_SHOWN = 5
#: Unseen persons (whole families, from the first) drawn in the embedding maps of map.png.
MAP_PERSONS = 12
#: How the pictures name the two strategies and the encoder before training.
TITLES = {"untrained": "before training", "random": "random triplets", "semihard": "semi-hard"}


@dataclass(frozen=True)
class DemoConfig:
    """Size of a demo run; the defaults fit the 150-second budget on 2 CPU cores.

    bench/demo.py measures them. The two trainings run at the same time, one process and one
    thread each (small convolutions gain less than 2x from a second thread); a training step in
    bfloat16 (AVX-512 BF16) costs 0.57 times a float32 one; and a warm-up to 5 times the old
    learning rate, then a cosine, reaches in 600 steps (95.6% one-shot rank-1) what 1000 steps
    at 1e-3 reached (95.0%); at a peak of 3e-3, 600 and 700 steps gave 95.2%.
    """

    persons: int = 1000  # training persons
    unseen: int = 200  # persons never trained on, for the one-shot and verification figures
    images: int = 10  # pictures per person
    steps: int = 600  # optimizer steps of each of the two trainings
    p: int = 32  # persons per batch (capped at ``persons``)
    k: int = 4  # pictures per person in a batch
    size: int = 48  # image side in pixels
    lr: float = 5e-3  # peak learning rate, reached after ``warmup`` steps, then a cosine to 0
    warmup: int = 60
    precision: str = "bfloat16"  # of the training forward pass (TrainConfig.precision)
    seed: int = 0
    out: Path = Path("demo-out")
    pairs: int = 6000  # verification pairs drawn from the unseen persons, half same-person
    enrolled: int = 5  # persons enrolled with one picture in the recognition show
    strangers: int = 3  # persons shown but never enrolled
    threads: int | None = None  # torch CPU threads; None keeps torch's setting
    #: Render and train in two worker processes (threads split between them); False: one.
    parallel: bool = True


def check_demo_config(config: DemoConfig) -> None:
    """InputError naming the first setting a demo cannot run with."""
    minimums = {
        "persons": 2,
        "unseen": 5,  # enough pairs for 10 verification folds with 2 pictures each
        "images": 2,
        "steps": 1,
        "p": 2,
        "k": 2,
        "size": 16,
        "pairs": 20,
        "enrolled": 1,
        "strangers": 0,
        "warmup": 0,
    }
    for name, minimum in minimums.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InputError(
                f"demo: {name} must be an integer of at least {minimum}, got {value!r}"
            )
    if not config.lr > 0:
        raise InputError(f"demo: lr must be > 0, got {config.lr!r}")
    if config.precision not in PRECISIONS:
        raise InputError(
            f"demo: precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}"
        )
    if Path(config.out).exists() and not Path(config.out).is_dir():
        raise InputError(f"demo: {config.out} is a file; give a folder for the output")


def _family_start(person: int) -> int:
    """The first global person id at or after ``person`` that starts a family of lookalikes."""
    return -(-person // FAMILY_SIZE) * FAMILY_SIZE


def demo_sets(config: DemoConfig) -> tuple[SyntheticFaces, SyntheticFaces, SyntheticFaces]:
    """(training, unseen, show) persons: disjoint id ranges, no family split between two sets.

    The show set has ``enrolled + strangers`` persons with 2 pictures each; the strangers follow
    the enrolled persons, so the first of them share a family with the last enrolled ones.
    """
    unseen_start = _family_start(config.persons)
    show_start = _family_start(unseen_start + config.unseen)
    common = {"size": config.size, "seed": config.seed, "family_size": FAMILY_SIZE}
    return (
        SyntheticFaces(config.persons, config.images, **common),
        SyntheticFaces(config.unseen, config.images, first_person=unseen_start, **common),
        SyntheticFaces(config.enrolled + config.strangers, 2, first_person=show_start, **common),
    )


class PixelEncoder(Encoder):
    """Raw pixels scaled to 0-1 as the embedding (not unit length): the nearest-neighbour
    baseline."""

    normalized = False

    def __init__(self, size: int):
        super().__init__()
        self.input_size = (size, size)
        self.embedding_dim = 3 * size * size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W pixels in 0-255 -> N x 3HW values in 0-1."""
        return images.float().flatten(1) / 255


def train_config(config: DemoConfig, strategy: str, threads: int | None = None) -> TrainConfig:
    """The training run of one strategy; both share everything else, seed included."""
    return TrainConfig(
        encoder="compact",
        size=config.size,
        p=min(config.p, config.persons),
        k=config.k,
        strategy=strategy,
        lr=config.lr,
        warmup_steps=min(config.warmup, config.steps - 1),
        steps=config.steps,
        seed=config.seed,
        threads=threads,
        out=str(Path(config.out) / strategy),
        checkpoint_every=config.steps,
        precision=config.precision,
    )


def active_fractions(history: list[dict], points: int = ACTIVE_POINTS) -> list[float]:
    """Mean active-triplet fraction over each of ``points`` equal stretches of the run, in order
    (one per step when the run is shorter)."""
    values = np.array([row["active_fraction"] for row in history], dtype=float)
    return [float(part.mean()) for part in np.array_split(values, min(points, len(values)))]


@dataclass(frozen=True)
class Answer:
    """What one-shot recognition answered for one picture."""

    person: str  # who the picture shows
    enrolled: bool  # whether that person was enrolled
    nearest: str  # the enrolled person at the smallest distance
    distance: float  # squared Euclidean distance to the nearest
    accepted: bool  # distance <= threshold: the answer is ``nearest``, else "unknown"
    right: bool  # the enrolled person named, or a stranger rejected

    @property
    def answer(self) -> str | None:
        """The name answered, None for "unknown"."""
        return self.nearest if self.accepted else None


def person_name(person_id: int) -> str:
    """The name of a synthetic person, as ``tripletface synth`` names its folder."""
    return f"person_{person_id:05d}"


def recognize_show(
    encoder: Encoder, show: SyntheticFaces, enrolled: int, threshold: float
) -> list[Answer]:
    """Enroll the first picture of the first ``enrolled`` persons of ``show`` in an in-memory
    index, then identify the second picture of every person against it at ``threshold``."""
    images, labels = show.tensors()
    first = np.flatnonzero(np.r_[True, np.diff(labels.numpy()) != 0])
    embeddings = encoder.embed(images)
    index = ExactIndex(embeddings[first[:enrolled]])
    distances, rows = index.search(embeddings[first + 1], k=1)
    answers = []
    for label, distance, row in zip(
        labels[first].tolist(), distances[:, 0], rows[:, 0], strict=True
    ):
        accepted = bool(distance <= threshold)
        known = label < enrolled
        answers.append(
            Answer(
                person=person_name(show.person_ids[label]),
                enrolled=known,
                nearest=person_name(show.person_ids[int(row)]),
                distance=float(distance),
                accepted=accepted,
                right=(accepted and int(row) == label) if known else not accepted,
            )
        )
    return answers


def write_plots(
    out: Path,
    reports: dict[str, EvaluationReport],
    runs: dict[str, RunResult],
    triplets: dict[str, list[tuple]],
    maps: dict[str, tuple[Encoder, float]],
    unseen: SyntheticFaces,
) -> list[Path]:
    """training.png (both runs), roc.png (every encoder), distances_<strategy>.png, triplets.png
    (as given) and map.png (the first MAP_PERSONS unseen persons by each of ``maps``' encoders,
    titled with its rank-1) in ``out``."""
    # matplotlib is imported only here: the CLI imports this module to build its parser.
    from tripletface.plots import (
        plot_distance_histograms,
        plot_embedding_maps,
        plot_rocs,
        plot_training,
        plot_triplets,
        tsne_2d,
    )

    paths = [
        plot_training(
            {TITLES[name]: out / name / "metrics.csv" for name in runs}, out / "training.png"
        ),
        plot_rocs(
            {name: roc_curve(r.distances, r.same)[:2] for name, r in reports.items()},
            out / "roc.png",
        ),
    ]
    for name in runs:
        report = reports[name]
        paths.append(
            plot_distance_histograms(
                report.distances[report.same],
                report.distances[~report.same],
                report.threshold,
                out / f"distances_{name}.png",
            )
        )
    margin = next(iter(runs.values())).config.margin
    paths.append(plot_triplets(triplets, margin, out / "triplets.png"))
    images, labels = unseen.tensors()
    shown = labels < min(MAP_PERSONS, unseen.num_persons)
    panels = {
        f"{TITLES[name]}: one-shot rank-1 {_percent(rank1).strip()}": (
            tsne_2d(encoder.embed(images[shown]).numpy()),
            labels[shown].numpy(),
        )
        for name, (encoder, rank1) in maps.items()
    }
    persons = int(shown.sum()) // unseen.images_per_person
    title = (
        f"{persons} unseen persons x {unseen.images_per_person} pictures, a colour per person and "
        f"a marker per family of {FAMILY_SIZE} lookalikes: t-SNE maps of their embeddings"
    )
    paths.append(plot_embedding_maps(panels, out / "map.png", FAMILY_SIZE, title))
    return paths


def _figures(report: EvaluationReport) -> dict:
    """The one-shot and verification figures of one encoder on the unseen persons."""
    return {
        "rank1": report.rank1,
        "rank5": report.rank5,
        "verification_accuracy": report.verification_accuracy,
        "roc_auc": report.roc_auc,
    }


def _percent(value: float) -> str:
    return f"{100 * value:5.1f}%"


def run_demo(
    config: DemoConfig | None = None,
    say: Callable[[str], None] = print,
    progress: bool = False,
) -> dict:
    """Run the demo, telling ``say`` what happens line by line; returns the figures as JSON-ready
    values: seconds, cpu_seconds, pixels, untrained, random, semihard, recognition, plots."""
    config = config or DemoConfig()
    check_demo_config(config)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, say, progress)
    finally:
        torch.set_num_threads(threads)


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (the workers once the pool has closed)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _workers(config: DemoConfig):
    """A pool of one spawned process per strategy, or a context giving None when not parallel.

    Spawned, not forked: a fork of a process whose torch threads already ran can hang.
    """
    if not config.parallel:
        return nullcontext(None)
    return worker_pool(len(STRATEGIES), "spawn")


def _fit_quietly(settings: TrainConfig, dataset: SyntheticFaces, encoder: Encoder) -> RunResult:
    """fit() without a progress bar: what a worker process runs."""
    return fit(settings, dataset, encoder, progress=False)


def _train_both(
    config: DemoConfig,
    train: SyntheticFaces,
    untrained: Encoder,
    pool: Executor | None,
    progress: bool,
) -> dict[str, RunResult]:
    """Both trainings from the untrained weights: at the same time in ``pool``'s processes,
    splitting the threads, or one after the other here."""
    threads = max(1, torch.get_num_threads() // len(STRATEGIES)) if pool else None
    settings = {strategy: train_config(config, strategy, threads) for strategy in STRATEGIES}
    if pool is None:
        return {
            strategy: fit(settings[strategy], train, copy.deepcopy(untrained), progress=progress)
            for strategy in STRATEGIES
        }
    futures = {
        strategy: pool.submit(_fit_quietly, settings[strategy], train, copy.deepcopy(untrained))
        for strategy in STRATEGIES
    }
    return {strategy: future.result() for strategy, future in futures.items()}


def _run(config: DemoConfig, say: Callable[[str], None], progress: bool) -> dict:
    """run_demo() once the thread count is set."""
    started, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"demo: cannot create the output folder {out} ({error})") from None
    train, unseen, show = demo_sets(config)
    with _workers(config) as pool:
        train.tensors(pool)
        unseen.tensors(pool)
        say(
            f"rendered {config.persons} training and {config.unseen} unseen persons "
            f"({config.images} pictures each, {config.size} x {config.size}, families of "
            f"{FAMILY_SIZE} lookalikes) in {time.perf_counter() - started:.0f} s"
        )

        def assess(encoder: Encoder) -> EvaluationReport:
            return evaluate(encoder, unseen, pairs_count=config.pairs, seed=config.seed)

        torch.manual_seed(config.seed)
        untrained = create_encoder("compact", input_size=config.size)
        reports = {"pixels": assess(PixelEncoder(config.size)), "untrained": assess(untrained)}
        probes = reports["pixels"].probes
        say(
            f"one-shot rank-1 on the unseen persons (first picture enrolled, {probes} probes), "
            "before training:"
        )
        say(f"  raw-pixel nearest neighbour  {_percent(reports['pixels'].rank1)}")
        say(f"  untrained encoder            {_percent(reports['untrained'].rank1)}")
        say(
            f"training the compact encoder twice from these weights on the same batches, "
            f"{config.steps} steps of {min(config.p, config.persons)} x {config.k} pictures in "
            f"{config.precision}: with {' and with '.join(STRATEGIES)} triplets"
            + (", both at once in two processes" if pool else "")
        )
        runs = _train_both(config, train, untrained, pool, progress)
    cpu_children = _children_cpu() - children

    figures: dict = {name: _figures(report) for name, report in reports.items()}
    for strategy, run in runs.items():
        reports[strategy] = assess(run.encoder)
        active = active_fractions(run.history)
        figures[strategy] = {
            **_figures(reports[strategy]),
            "active_fraction": active,
            "train_seconds": run.seconds,
        }
        say(
            f"  {strategy:<8} active triplets over training  "
            f"{' '.join(_percent(a).strip() for a in active)}  ({run.seconds:.0f} s)"
        )
        say(
            f"  {'':<8} unseen persons: one-shot rank-1 "
            f"{_percent(reports[strategy].rank1).strip()}, verification accuracy "
            f"{_percent(reports[strategy].verification_accuracy).strip()}"
        )
    gain = reports["semihard"].rank1 - reports["random"].rank1
    say(f"semi-hard selection minus random triplets, same budget: {100 * gain:+.1f} points rank-1")

    maps = {"untrained": (untrained, reports["untrained"].rank1)}
    maps.update({name: (run.encoder, reports[name].rank1) for name, run in runs.items()})
    triplets = triplet_rows(
        train, {TITLES[name]: (untrained, run) for name, run in runs.items()}, TRIPLETS_SHOWN
    )
    plots = write_plots(out, reports, runs, triplets, maps, unseen)
    say(f"plots: {', '.join(str(path) for path in plots)}")

    threshold = reports["semihard"].threshold
    answers = recognize_show(runs["semihard"].encoder, show, config.enrolled, threshold)
    say(
        f"one-shot recognition: {config.enrolled} new persons enrolled from one picture each, "
        f"threshold {threshold:.3f} (squared distance, from the unseen persons' pairs)"
    )
    for a in answers:
        who = a.person if a.enrolled else f"{a.person} (stranger)"
        said = a.answer or f"unknown (nearest {a.nearest})"
        verdict = "right" if a.right else "WRONG"
        say(f"  new picture of {who:<25} -> {said:<30} distance {a.distance:.3f}  {verdict}")
    figures["recognition"] = {
        "threshold": threshold,
        "right": sum(a.right for a in answers),
        "answers": [{**asdict(a), "answer": a.answer} for a in answers],
    }
    figures["plots"] = [str(path) for path in plots]
    figures["config"] = {**asdict(config), "out": str(out)}
    figures["threads"] = torch.get_num_threads()
    figures["cpu_seconds"] = time.process_time() - cpu + cpu_children
    figures["seconds"] = time.perf_counter() - started
    say(f"demo done in {figures['seconds']:.0f} s ({figures['cpu_seconds']:.0f} s of CPU time)")
    return {"seconds": figures.pop("seconds"), **figures}
