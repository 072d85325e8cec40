"""Verification and identification metrics on embedding distances (core maths, no I/O).

Distances are squared Euclidean unless said otherwise; a pair is *accepted* as the same person when
its distance is at most the threshold (FaceNet's convention, Schroff et al. 2015, section 4.1):
VAL(d) = |{same pairs with D <= d}| / |same pairs|, FAR(d) = |{different pairs with D <= d}| /
|different pairs|. Every function takes numpy arrays or CPU tensors and returns plain floats or
numpy arrays.
"""

import numpy as np

from tripletface.errors import InputError


def _as_array(values, dtype=np.float64) -> np.ndarray:
    """A numpy array (of ``dtype``) from a numpy array, a tensor on any device, or a sequence."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _pairs(distances, same) -> tuple[np.ndarray, np.ndarray]:
    """Validated (distances float64 [N], same bool [N]) with both classes present."""
    d = _as_array(distances)
    s = _as_array(same, dtype=bool)
    if d.ndim != 1 or d.shape != s.shape:
        raise InputError(
            f"distances and same must be two 1-d arrays of one length, got shapes "
            f"{d.shape} and {s.shape}"
        )
    if not np.all(np.isfinite(d)):
        raise InputError("distances contain NaN or infinity: check the embeddings")
    if s.all() or not s.any():
        raise InputError(
            "verification needs at least one same-person and one different-person pair"
        )
    return d, s


def _rates(d: np.ndarray, s: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) when accepting pairs with distance <= each threshold."""
    same_sorted = np.sort(d[s])
    diff_sorted = np.sort(d[~s])
    tar = np.searchsorted(same_sorted, thresholds, side="right") / len(same_sorted)
    far = np.searchsorted(diff_sorted, thresholds, side="right") / len(diff_sorted)
    return far, tar


def roc_curve(distances, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of a distance: (FAR, TAR, thresholds), thresholds ascending, accepting D <= threshold.

    The first threshold lies just below the smallest distance (nothing accepted, the point (0, 0));
    then one threshold per distinct distance, so tied distances move the curve in one diagonal step
    and the last point is (1, 1).
    """
    d, s = _pairs(distances, same)
    unique = np.unique(d)
    thresholds = np.concatenate([[np.nextafter(unique[0], -np.inf)], unique])
    far, tar = _rates(d, s, thresholds)
    return far, tar, thresholds


def roc_auc(distances, same) -> float:
    """Area under the ROC (trapezoids): P(D_same < D_diff) with ties counted one half."""
    far, tar, _ = roc_curve(distances, same)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def eer(distances, same) -> float:
    """Equal error rate: where FAR = 1 - TAR on the ROC, linear between its points."""
    far, tar, _ = roc_curve(distances, same)
    gap = far + tar - 1  # -1 at the first point, +1 at the last, non-decreasing between
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0:
        return float(far[i])
    step = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(far[i - 1] + step * (far[i] - far[i - 1]))


def val_at_far(distances, same, far: float = 1e-3) -> tuple[float, float]:
    """(VAL, threshold) at the largest threshold whose FAR is at most ``far`` (no interpolation)."""
    if not 0 <= far <= 1:
        raise InputError(f"far must lie in [0, 1], got {far}")
    rates_far, tar, thresholds = roc_curve(distances, same)
    i = int(np.flatnonzero(rates_far <= far)[-1])  # rates_far[0] == 0, so there is always one
    return float(tar[i]), float(thresholds[i])


def _accuracy_candidates(d: np.ndarray) -> np.ndarray:
    """Thresholds that realise every distinct accept set: below all, between neighbours, at top."""
    unique = np.unique(d)
    middles = unique[:-1] + (unique[1:] - unique[:-1]) / 2
    return np.concatenate([[np.nextafter(unique[0], -np.inf)], middles, [unique[-1]]])


def _accuracies(d: np.ndarray, s: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of pairs classified correctly by accepting D <= each threshold."""
    same_sorted = np.sort(d[s])
    diff_sorted = np.sort(d[~s])
    accepted_same = np.searchsorted(same_sorted, thresholds, side="right")
    rejected_diff = len(diff_sorted) - np.searchsorted(diff_sorted, thresholds, side="right")
    return (accepted_same + rejected_diff) / len(d)


def best_threshold(distances, same) -> float:
    """The threshold that maximises accuracy, halfway between neighbouring distances.

    Among equally accurate thresholds the smallest wins. Works with one class present too (the
    folds of a k-fold split may hold only one), unlike the ROC functions.
    """
    d = _as_array(distances)
    s = _as_array(same, dtype=bool)
    if d.ndim != 1 or d.shape != s.shape or len(d) == 0:
        raise InputError("best_threshold needs two non-empty 1-d arrays of one length")
    candidates = _accuracy_candidates(d)
    return float(candidates[int(np.argmax(_accuracies(d, s, candidates)))])


def accuracy(distances, same, threshold: float) -> float:
    """Fraction of pairs classified correctly by accepting D <= threshold."""
    d = _as_array(distances)
    s = _as_array(same, dtype=bool)
    return float(np.mean((d <= threshold) == s))


def fold_ids(same, folds: int = 10, seed: int | None = 0) -> np.ndarray:
    """Fold index of each pair: contiguous blocks in file order when ``seed`` is None (the LFW
    protocol's ten sets of pairs.txt), else a seeded split stratified by same/different."""
    s = _as_array(same, dtype=bool)
    if not 2 <= folds <= len(s):
        raise InputError(
            f"folds must lie between 2 and the number of pairs ({len(s)}), got {folds}"
        )
    ids = np.empty(len(s), dtype=np.int64)
    if seed is None:
        for k, block in enumerate(np.array_split(np.arange(len(s)), folds)):
            ids[block] = k
        return ids
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(s)), rng.permutation(np.flatnonzero(~s))]
    )
    ids[order] = np.arange(len(s)) % folds
    return ids


def verification_accuracy_kfold(
    distances, same, folds: int = 10, seed: int | None = 0
) -> tuple[float, float, np.ndarray]:
    """(mean accuracy, its standard deviation, per-fold thresholds) over ``folds`` folds, each
    tested at the best threshold of the other folds (LFW protocol, Huang et al. 2007)."""
    d, s = _pairs(distances, same)
    ids = fold_ids(s, folds, seed)
    accuracies = np.empty(folds)
    thresholds = np.empty(folds)
    for k in range(folds):
        test = ids == k
        thresholds[k] = best_threshold(d[~test], s[~test])
        accuracies[k] = accuracy(d[test], s[test], thresholds[k])
    return float(accuracies.mean()), float(accuracies.std()), thresholds


#: Probes per block of the probe x gallery distance matrix, so memory stays bounded on large sets.
_PROBE_BLOCK = 1024


def _identity_distances(gallery_emb, gallery_labels, probe_emb, probe_labels):
    """(identities L, probe labels P, blocks): blocks yields (rows, distances), the squared
    distance of each probe in the slice ``rows`` to the nearest gallery entry of each identity."""
    labels = _as_array(gallery_labels, dtype=np.int64)
    probes = _as_array(probe_labels, dtype=np.int64)
    gallery, probe = _as_array(gallery_emb), _as_array(probe_emb)
    if len(labels) == 0:
        raise InputError("the gallery is empty: enroll at least one person")
    if gallery.ndim != 2 or probe.ndim != 2 or gallery.shape[1] != probe.shape[1]:
        raise InputError(
            f"embeddings must be N x D and M x D, got {probe.shape} and {gallery.shape}"
        )
    if len(gallery) != len(labels) or len(probe) != len(probes):
        raise InputError(
            f"{len(gallery)} gallery and {len(probe)} probe embeddings but {len(labels)} and "
            f"{len(probes)} labels: give one label per embedding"
        )
    import torch  # here, so that threshold searches (val_at_far) run without torch

    from tripletface.distances import pairwise_distances

    order = np.argsort(labels, kind="stable")
    identities, starts = np.unique(labels[order], return_index=True)
    gallery_t, probe_t = torch.as_tensor(gallery[order]), torch.as_tensor(probe)

    def blocks():
        for start in range(0, len(probes), _PROBE_BLOCK):
            rows = slice(start, start + _PROBE_BLOCK)
            d = pairwise_distances(probe_t[rows], gallery_t).numpy()
            yield rows, np.minimum.reduceat(d, starts, axis=1)

    return identities, probes, blocks()


def one_shot_identification(
    gallery_emb, gallery_labels, probe_emb, probe_labels, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
    """Closed-set rank-k accuracy ``{"rank1": ..., "rank5": ...}`` by squared Euclidean distance.

    Identities are ranked by their nearest gallery entry; every probe's identity must be enrolled.
    Ties are broken at random in expectation: a probe whose identity ties with b others right after
    a closer ones counts clip(k - a, 0, b + 1) / (b + 1), so a constant encoder scores chance.
    """
    identities, probes, blocks = _identity_distances(
        gallery_emb, gallery_labels, probe_emb, probe_labels
    )
    if len(probes) == 0:
        raise InputError("identification needs at least one probe")
    enrolled = np.isin(probes, identities)
    if not enrolled.all():
        raise InputError(
            f"probe label {probes[~enrolled][0]} is not in the gallery: "
            "enroll every probe's identity"
        )
    column = np.searchsorted(identities, probes)
    closer = np.empty(len(probes), dtype=np.int64)
    tied = np.empty(len(probes), dtype=np.int64)
    for rows, d in blocks:
        own = d[np.arange(len(d)), column[rows]][:, None]
        closer[rows] = (d < own).sum(1)
        tied[rows] = (d == own).sum(1) - 1
    return {f"rank{k}": float(np.mean(np.clip(k - closer, 0, tied + 1) / (tied + 1))) for k in ks}


def open_set_rejection(
    gallery_emb, gallery_labels, probe_emb, probe_labels, threshold: float
) -> dict[str, float]:
    """Open-set identification at a threshold on the squared distance to the nearest gallery entry.

    Returns ``rejection_rate``, the fraction of probes of unenrolled persons whose nearest distance
    exceeds the threshold, and ``identification_rate``, the fraction of probes of enrolled persons
    accepted (distance <= threshold) with the right identity nearest (ties: the smallest label);
    a rate with no probe to count is NaN. Also ``known`` and ``unknown``, the two probe counts.
    """
    identities, probes, blocks = _identity_distances(
        gallery_emb, gallery_labels, probe_emb, probe_labels
    )
    nearest = np.empty(len(probes), dtype=np.int64)
    accepted = np.empty(len(probes), dtype=bool)
    for rows, d in blocks:
        nearest[rows] = np.argmin(d, axis=1)
        accepted[rows] = d.min(axis=1) <= threshold
    known = np.isin(probes, identities)
    right = identities[nearest] == probes
    return {
        "rejection_rate": float(np.mean(~accepted[~known])) if (~known).any() else float("nan"),
        "identification_rate": float(np.mean(accepted[known] & right[known]))
        if known.any()
        else float("nan"),
        "known": int(known.sum()),
        "unknown": int((~known).sum()),
    }
