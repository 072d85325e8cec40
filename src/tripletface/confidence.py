"""Confidence: the probability that two faces show the same person, given their distance.

A distance alone means little to a user; a probability does (face_recognition #707, deepface
#1295). It is fitted on calibration pairs (squared Euclidean distances between unit-length
embeddings, each pair labelled same person or not) by Platt scaling (a logistic curve in the
distance, Platt 1999) or isotonic regression (the monotone step function of best fit, by pool
adjacent violators). Same-person and different-person pairs are weighted to count equally, so
the confidence is the posterior at even odds: 0.5 where a distance is as likely between two
photos of one person as between photos of two persons, whatever the pairs' proportions. A model
is a small dict (``to_dict`` / ``ConfidenceModel.from_dict``) that a gallery stores as JSON.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tripletface.errors import InputError

METHODS = ("platt", "isotonic")
# Newton's method on a two-parameter convex loss converges in a handful of steps.
_NEWTON_STEPS = 100
# The slope of a Platt curve fitted on pairs whose distance tells nothing: 0.5 everywhere.
_FLAT = 1e-9


@dataclass(frozen=True)
class ConfidenceModel:
    """P(same person | distance), non-increasing in the distance.

    platt: ``params`` = (a, b) with P = 1 / (1 + exp(a * d + b)), a > 0. isotonic: ``params``
    holds the distances (increasing) and ``values`` the probabilities at them, linearly
    interpolated between and held constant beyond. ``source`` says what it was fitted on.
    """

    method: str
    params: tuple[float, ...]
    values: tuple[float, ...] = ()
    source: str = ""

    def __call__(self, distances) -> np.ndarray:
        """Probabilities in [0, 1] of the same person for squared distances (any shape)."""
        d = np.asarray(distances, dtype=np.float64)
        if self.method == "platt":
            a, b = self.params
            return 0.5 * (1 - np.tanh((a * d + b) / 2))  # the logistic, without overflow
        return np.interp(d, self.params, self.values)

    def to_dict(self) -> dict:
        """JSON-ready form: {"method", "params", "values", "source"}."""
        return {
            "method": self.method,
            "params": list(self.params),
            "values": list(self.values),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ConfidenceModel":
        """The model ``to_dict`` wrote; a clear error for anything else."""
        try:
            model = cls(
                str(data["method"]),
                tuple(float(v) for v in data["params"]),
                tuple(float(v) for v in data.get("values", ())),
                str(data.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"confidence model {data!r:.80} is malformed ({error})") from None
        _check(model)
        return model


def _check(model: ConfidenceModel) -> None:
    """Raise InputError unless the model's parameters describe a valid curve."""
    if model.method not in METHODS:
        raise InputError(f"unknown confidence method {model.method!r}: one of {METHODS}")
    if model.method == "platt" and (len(model.params) != 2 or not model.params[0] > 0):
        raise InputError(f"a platt confidence model needs (a > 0, b), got {model.params}")
    if model.method == "isotonic":
        x, y = np.array(model.params), np.array(model.values)
        if len(x) == 0 or len(x) != len(y) or np.any(np.diff(x) < 0):
            raise InputError("an isotonic confidence model needs increasing distances and values")
        if np.any(np.diff(y) > 0) or np.any((y < 0) | (y > 1)):
            raise InputError("an isotonic confidence model's values must fall in [0, 1]")


def _labelled(distances, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distances, same as float, weights making both classes weigh 1/2 in total)."""
    d = np.asarray(distances, dtype=np.float64).ravel()
    s = np.asarray(same, dtype=bool).ravel()
    if len(d) != len(s) or not np.all(np.isfinite(d)):
        raise InputError(f"{len(d)} distances and {len(s)} labels: give one finite distance each")
    positives, negatives = int(s.sum()), int((~s).sum())
    if positives == 0 or negatives == 0:
        raise InputError(
            f"calibration pairs: {positives} same-person and {negatives} different-person; "
            "fitting a confidence needs both (photos of at least two people, two of one)"
        )
    weights = np.where(s, 0.5 / positives, 0.5 / negatives)
    return d, s.astype(np.float64), weights


def fit_platt(distances, same, source: str = "") -> ConfidenceModel:
    """Platt scaling: the weighted logistic fit of same ~ distance (Newton's method), with
    Platt's smoothed targets so that separable pairs still give a finite slope."""
    d, s, w = _labelled(distances, same)
    positives, negatives = s.sum(), len(s) - s.sum()
    target = np.where(s > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    scale = d.std() or 1.0
    x = (d - d.mean()) / scale
    theta = np.zeros(2)  # P = sigmoid(-(theta0 * x + theta1))
    for _ in range(_NEWTON_STEPS):
        z = theta[0] * x + theta[1]
        p = 0.5 * (1 - np.tanh(z / 2))
        residual = w * (target - p)  # gradient of the weighted log loss w.r.t. z
        gradient = np.array([(residual * x).sum(), residual.sum()])
        curvature = w * p * (1 - p)
        cross = (curvature * x).sum()
        hessian = np.array([[(curvature * x * x).sum(), cross], [cross, curvature.sum()]])
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    a = theta[0] / scale
    b = theta[1] - theta[0] * d.mean() / scale
    if not a > _FLAT:
        # Same-person pairs no nearer than the others: the best non-increasing curve is flat.
        a, b = _FLAT, 0.0
    return ConfidenceModel("platt", (float(a), float(b)), source=source)


def fit_isotonic(distances, same, source: str = "") -> ConfidenceModel:
    """Isotonic regression: the non-increasing step function of least weighted squared error
    (pool adjacent violators), flat over each block's distances and linear between blocks."""
    d, s, w = _labelled(distances, same)
    order = np.argsort(d, kind="stable")
    blocks: list[list[float]] = []  # [weight, weighted sum of same, first and last distance]
    for i in order:
        blocks.append([w[i], w[i] * s[i], d[i], d[i]])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][0] <= blocks[-1][1] / blocks[-1][0]:
            last = blocks.pop()
            blocks[-1] = [blocks[-1][0] + last[0], blocks[-1][1] + last[1], blocks[-1][2], last[3]]
    x, y = [], []
    for weight, total, first, final in blocks:
        value = float(min(max(total / weight, 0.0), 1.0))
        ends = (first,) if first == final else (first, final)
        x += [float(end) for end in ends]
        y += [value] * len(ends)
    return ConfidenceModel("isotonic", tuple(x), tuple(y), source)


def fit(distances, same, method: str = "platt", source: str = "") -> ConfidenceModel:
    """The confidence model of ``method`` (one of METHODS) fitted on labelled pair distances."""
    if method not in METHODS:
        raise InputError(f"unknown confidence method {method!r}: choose one of {METHODS}")
    return (fit_platt if method == "platt" else fit_isotonic)(distances, same, source)


def brier_score(probabilities, same, balanced: bool = True) -> float:
    """Mean squared error of the probabilities against the 0/1 labels; ``balanced`` weighs the
    two classes equally, the odds the confidence is stated at."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    _, s, w = _labelled(np.zeros(len(p)), same)
    if not balanced:
        w = np.full(len(p), 1 / len(p))
    return float((w * (p - s) ** 2).sum())


@dataclass(frozen=True)
class ReliabilityBin:
    """Pairs whose predicted probability fell in [low, high): how many of each kind, the mean
    prediction and the observed same-person rate, both at even odds."""

    low: float
    high: float
    same: int
    different: int
    predicted: float
    observed: float


def reliability(probabilities, same, bins: int = 10) -> list[ReliabilityBin]:
    """Reliability diagram: ``bins`` equal-width probability bins (the last one closed), each
    with its mean prediction and its same-person rate, weighting both classes equally."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    _, s, w = _labelled(np.zeros(len(p)), same)
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    out = []
    for k in range(bins):
        inside = index == k
        total = w[inside].sum()
        predicted = float((w * p)[inside].sum() / total) if total else math.nan
        observed = float((w * s)[inside].sum() / total) if total else math.nan
        same_count = int(s[inside].sum())
        out.append(
            ReliabilityBin(
                float(edges[k]),
                float(edges[k + 1]),
                same_count,
                int(inside.sum()) - same_count,
                predicted,
                observed,
            )
        )
    return out


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float:
    """Mean |predicted - observed| over the bins, weighted by their share of pairs."""
    counts = np.array([b.same + b.different for b in bins], dtype=np.float64)
    gaps = np.array([abs(b.predicted - b.observed) if b.same + b.different else 0 for b in bins])
    return float((counts * gaps).sum() / counts.sum()) if counts.sum() else math.nan


#: The models shipped for pretrained encoders (``tripletface calibrate`` replaces them in a
#: gallery), fitted by bench/confidence.py; ``source`` says on what. On the 148 held-apart
#: celeba299 persons dlib-resnet's scores Brier 0.0231 and calibration error 0.013 (isotonic,
#: 282 numbers: 0.0224 and 0.004); 50% at distance 0.201, 90% at 0.158.
DEFAULT_MODELS: dict[str, dict] = {
    "dlib-resnet": {
        "method": "platt",
        "params": [51.0578, -10.2624],
        "values": [],
        "source": "bench/confidence.py: Platt scaling on all pairs of 150 celeba299 persons "
        "(CelebA, Liu et al. ICCV 2015; seed 0), 36,870 same-person and 4,872,541 "
        "different-person pairs, dlib-resnet, the default face rule",
    }
}


def default_model(encoder_name: str) -> ConfidenceModel | None:
    """The shipped confidence model of an encoder, or None when it has none."""
    data = DEFAULT_MODELS.get(encoder_name)
    return None if data is None else ConfidenceModel.from_dict(data)
