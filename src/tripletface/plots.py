"""PNG figures of an evaluation and of a training run, drawn with matplotlib's Agg backend.

Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot, so nothing needs
a display and no global figure state survives a call; each PNG is written atomically.
"""

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tripletface.cache import write_atomic
from tripletface.errors import InputError

#: Columns a training CSV must hold for plot_training.
TRAINING_COLUMNS = ("step", "loss", "active_fraction")


def _save(figure: Figure, path: str | Path) -> Path:
    """Render the figure to a PNG at path (atomically); returns the path."""
    FigureCanvasAgg(figure)
    figure.tight_layout()
    return write_atomic(Path(path), lambda stream: figure.savefig(stream, format="png", dpi=100))


def plot_rocs(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path) -> Path:
    """ROC curves {label: (FAR, TAR)} on a linear and a log FAR axis; chance is a dashed line."""
    figure = Figure(figsize=(9, 4))
    linear, logarithmic = figure.subplots(1, 2)
    smallest = 1.0
    for label, (far, tar) in curves.items():
        far, tar = np.asarray(far, dtype=float), np.asarray(tar, dtype=float)
        linear.plot(far, tar, label=label or None)
        positive = far > 0
        logarithmic.plot(far[positive], tar[positive], label=label or None)
        smallest = min(smallest, far[positive].min(initial=1.0))
    linear.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    chance = np.geomspace(smallest, 1, 50)
    logarithmic.plot(chance, chance, "k--", linewidth=0.8)
    logarithmic.set_xscale("log")
    for axes in (linear, logarithmic):
        axes.set_xlabel("false accept rate (FAR)")
        axes.set_ylabel("true accept rate (VAL)")
        axes.set_ylim(0, 1.01)
        axes.grid(alpha=0.3)
    linear.set_title("ROC")
    logarithmic.set_title("ROC, low FAR")
    if any(curves):
        linear.legend(loc="lower right")
    return _save(figure, path)


def plot_roc(far: Sequence[float], tar: Sequence[float], path, label: str = "") -> Path:
    """One ROC curve (FAR, TAR as from metrics.roc_curve) to a PNG at path."""
    return plot_rocs({label: (far, tar)}, path)


def plot_distance_histograms(
    same_d: Sequence[float], diff_d: Sequence[float], threshold: float, path
) -> Path:
    """Histograms of same-person and different-person distances (shared bins) and the threshold."""
    same_d, diff_d = np.asarray(same_d, dtype=float), np.asarray(diff_d, dtype=float)
    values = np.concatenate([same_d, diff_d, [threshold]])
    bins = np.linspace(values.min(), values.max() + 1e-12, 51)
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.hist(same_d, bins=bins, alpha=0.6, density=True, label=f"same person ({len(same_d)})")
    axes.hist(diff_d, bins=bins, alpha=0.6, density=True, label=f"different ({len(diff_d)})")
    axes.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3g}")
    axes.set_xlabel("squared Euclidean distance")
    axes.set_ylabel("density")
    axes.set_title("Distances of verification pairs")
    axes.legend()
    return _save(figure, path)


def read_training_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Columns step, loss and active_fraction of a training metrics CSV as float arrays (NaN where
    a cell is empty)."""
    path = Path(path)
    try:
        with path.open(newline="") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: cannot read the training metrics ({error})") from None
    missing = [c for c in TRAINING_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise InputError(
            f"{path}: no rows with columns {', '.join(missing)}; give the metrics CSV of a "
            "training run"
        )
    try:
        # An empty cell (a step that logged nothing for a column) becomes a gap in the line.
        return {
            c: np.array([float(row[c]) if row[c] else np.nan for row in rows])
            for c in TRAINING_COLUMNS
        }
    except (TypeError, ValueError):
        raise InputError(f"{path}: a {'/'.join(TRAINING_COLUMNS)} value is not a number") from None


def _training_columns(source) -> dict[str, np.ndarray]:
    """Training columns from a CSV path or a mapping of arrays."""
    if isinstance(source, (str, Path)):
        return read_training_csv(source)
    missing = [c for c in TRAINING_COLUMNS if c not in source]
    if missing:
        raise InputError(f"training metrics lack {', '.join(missing)}")
    return {c: np.asarray(source[c], dtype=float) for c in TRAINING_COLUMNS}


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each position (fewer at the start), NaN ignored."""
    present = ~np.isnan(values)
    sums = np.cumsum(np.where(present, values, 0.0))
    counts = np.cumsum(present)
    before = np.maximum(np.arange(len(values)) - window, -1)
    window_sums = sums - np.where(before >= 0, sums[before], 0.0)
    window_counts = counts - np.where(before >= 0, counts[before], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(window_counts > 0, window_sums / np.maximum(window_counts, 1), np.nan)


def _noisy_line(axes, steps: np.ndarray, values: np.ndarray, colour: str, label: str) -> None:
    """Per-step values drawn faintly under their running mean over a fiftieth of the run."""
    window = max(1, len(values) // 50)
    if window > 1:
        axes.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
    axes.plot(steps, running_mean(values, window), color=colour, label=label or None)


def plot_training(steps_csv_or_arrays, path) -> Path:
    """Loss and active-triplet fraction over steps, from a CSV path or {step, loss, ...} arrays.

    Several runs compare on the same axes when given as {label: csv path or arrays}.
    """
    single = isinstance(steps_csv_or_arrays, (str, Path)) or "step" in steps_csv_or_arrays
    runs = {"": steps_csv_or_arrays} if single else dict(steps_csv_or_arrays)
    figure = Figure(figsize=(6, 6))
    loss_axes, active_axes = figure.subplots(2, 1, sharex=True)
    for colour, (label, source) in enumerate(runs.items()):
        columns = _training_columns(source)
        for axes, key in ((loss_axes, "loss"), (active_axes, "active_fraction")):
            _noisy_line(axes, columns["step"], columns[key], f"C{colour}", label)
    loss_axes.set_ylabel("triplet loss")
    active_axes.set_ylabel("active-triplet fraction")
    active_axes.set_xlabel("step")
    active_axes.set_ylim(bottom=0)
    for axes in (loss_axes, active_axes):
        axes.grid(alpha=0.3)
    if not single:
        loss_axes.legend()
    loss_axes.set_title("Training")
    return _save(figure, path)


def pca_2d(points: np.ndarray) -> np.ndarray:
    """N x 2 coordinates of N x D points on their two principal axes (centred; each axis' sign
    chosen so that its largest loading is positive, so equal inputs give equal maps)."""
    centred = np.asarray(points, dtype=float) - np.mean(points, axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])
    return centred @ (axes * signs[:, None]).T


def neighbour_affinities(points: np.ndarray, perplexity: float) -> np.ndarray:
    """N x N t-SNE conditional affinities: row i is a Gaussian over the squared Euclidean
    distances from point i (0 on the diagonal, sum 1) whose bandwidth, found by bisection, gives
    it ``perplexity`` (entropy log(perplexity), at most log(N - 1))."""
    points = np.asarray(points, dtype=float)
    squared = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    n = len(points)
    rows = np.zeros((n, n))
    target = np.log(min(perplexity, n - 1))
    for i in range(n):
        others = np.delete(squared[i], i)
        low, high, beta = 0.0, np.inf, 1.0 / max(float(np.median(others)), 1e-12)
        for _ in range(100):
            weights = np.exp(-(others - others.min()) * beta)
            p = weights / weights.sum()
            entropy = -np.sum(p * np.log(np.maximum(p, 1e-300)))
            if abs(entropy - target) < 1e-8:
                break
            if entropy > target:
                low, beta = beta, beta * 2 if high == np.inf else (beta + high) / 2
            else:
                high, beta = beta, (beta + low) / 2
        rows[i, np.arange(n) != i] = p
    return rows


def tsne_2d(points: np.ndarray, perplexity: float = 15.0, steps: int = 500) -> np.ndarray:
    """N x 2 t-SNE map of N x D points (van der Maaten and Hinton 2008): exact gradients, early
    exaggeration x4 for the first 100 steps, momentum 0.5 then 0.8, started from the PCA map
    shrunk to a spread of 1e-4 (repeatable, and the global layout starts right)."""
    conditional = neighbour_affinities(points, perplexity)
    p = (conditional + conditional.T) / (2 * len(conditional))
    start = pca_2d(points)
    y = 1e-4 * start / max(float(start[:, 0].std()), 1e-12)
    velocity = np.zeros_like(y)
    for step in range(steps):
        exaggeration, momentum = (4.0, 0.5) if step < 100 else (1.0, 0.8)
        kernel = 1.0 / (1.0 + ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(kernel, 0.0)
        q = kernel / kernel.sum()
        forces = (exaggeration * p - q) * kernel
        gradient = 4.0 * (forces.sum(1)[:, None] * y - forces @ y)
        velocity = momentum * velocity - 100.0 * gradient
        y = y + velocity
    return y - y.mean(0)


#: One triplet as drawn: anchor, positive and negative pixels (H x W x 3 uint8), d(a,p), d(a,n).
Triplet = tuple[np.ndarray, np.ndarray, np.ndarray, float, float]


def _side_by_side(images: Sequence[np.ndarray], gap: int) -> np.ndarray:
    """H x W x 3 uint8 images in a row, ``gap`` white columns between them."""
    height = images[0].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    parts = [part for image in images for part in (image, spacer)][:-1]
    return np.concatenate(parts, axis=1)


def plot_triplets(rows: Mapping[str, Sequence[Triplet]], margin: float, path) -> Path:
    """A grid of triplets, one titled row per selection (e.g. strategy and step): each shows
    anchor | positive | negative with d(a,p) and d(a,n) under it, in red when the triplet is
    active (d(a,p) - d(a,n) + margin > 0: it carries loss), in grey when it teaches nothing."""
    count = max((len(triplets) for triplets in rows.values()), default=0)
    if not rows or count == 0:
        raise InputError("plot_triplets: no triplets to draw")
    figure = Figure(figsize=(2.3 * count, 1.2 * len(rows) + 0.7))
    grid = figure.subplots(len(rows), count, squeeze=False)
    for row, (title, triplets) in zip(grid, rows.items(), strict=True):
        for column, axes in enumerate(row):
            axes.set_xticks([])
            axes.set_yticks([])
            if column >= len(triplets):
                axes.set_axis_off()
                continue
            anchor, positive, negative, d_ap, d_an = triplets[column]
            gap = max(1, anchor.shape[1] // 12)
            axes.imshow(_side_by_side([anchor, positive, negative], gap), interpolation="nearest")
            active = d_ap - d_an + margin > 0
            axes.set_xlabel(
                f"d(a,p) {d_ap:.2f}   d(a,n) {d_an:.2f}",
                color="#c0392b" if active else "#666666",
                fontsize=8.5,
                fontweight="bold" if active else "normal",
            )
            for spine in axes.spines.values():
                spine.set_color("#c0392b" if active else "#bbbbbb")
                spine.set_linewidth(1.6 if active else 0.8)
        row[0].set_ylabel(title, fontsize=9.5, rotation=0, ha="right", va="center", labelpad=8)
    for axes in grid[0]:
        if axes.axison:
            axes.set_title("anchor   positive   negative", fontsize=8, color="#444444")
    figure.suptitle(
        f"Triplets chosen: red ones are active (d(a,p) - d(a,n) + {margin:g} > 0) and teach, "
        "grey ones have loss 0",
        fontsize=11,
    )
    return _save(figure, path)


#: Colours told apart at a glance: tab10's, then two more, before tab20's lighter shades.
_EXTRA_COLOURS = ("#000000", "#f1c40f")


def _distinct_colour(index: int):
    """The index-th colour of a qualitative palette (tab10, two more, then tab20's light ones)."""
    if index < 10:
        return colormaps["tab10"](index)
    if index < 10 + len(_EXTRA_COLOURS):
        return _EXTRA_COLOURS[index - 10]
    return colormaps["tab20"]((2 * (index - 12) + 1) % 20)


def plot_embedding_maps(
    maps: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path,
    group_size: int | None = None,
    title: str = "",
) -> Path:
    """Side-by-side scatter plots of 2-D maps {title: (N x 2 points, N labels)}, a colour per
    label (the same across panels); labels in groups of ``group_size`` (families of lookalikes)
    share a marker; ``title`` goes above the panels."""
    if not maps:
        raise InputError("plot_embedding_maps: no maps to draw")
    labels = np.unique(np.concatenate([np.asarray(lab) for _, lab in maps.values()]))
    colours = {label: _distinct_colour(i) for i, label in enumerate(labels)}
    markers = "os^Dvp*hX<>"
    figure = Figure(figsize=(4.2 * len(maps), 4.6 if title else 4.4))
    panels = figure.subplots(1, len(maps), squeeze=False)[0]
    for axes, (heading, (points, point_labels)) in zip(panels, maps.items(), strict=True):
        points, point_labels = np.asarray(points, dtype=float), np.asarray(point_labels)
        for i, label in enumerate(labels):
            chosen = point_labels == label
            marker = markers[(i // group_size) % len(markers)] if group_size else "o"
            axes.scatter(
                points[chosen, 0],
                points[chosen, 1],
                s=26,
                color=colours[label],
                marker=marker,
                edgecolors="white",
                linewidths=0.4,
            )
        axes.set_title(heading, fontsize=10.5)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_aspect("equal", adjustable="datalim")
    if title:
        figure.suptitle(title, fontsize=11)
    return _save(figure, path)
