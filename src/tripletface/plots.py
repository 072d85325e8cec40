"""PNG figures of an evaluation and of a training run, drawn with matplotlib's Agg backend.

Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot, so nothing needs
a display and no global figure state survives a call; each PNG is written atomically.
"""

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tripletface.errors import InputError
from tripletface.models.checkpoint import write_atomic

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
