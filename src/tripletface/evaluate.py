"""Evaluate an encoder on a labelled data set: LFW-style verification and one-shot identification.

Every image is embedded once. Verification uses pairs from an LFW pairs file (its ten sets are the
ten folds) or pairs drawn from the data set with a seed (stratified seeded folds). Identification
enrolls each person's first image (data set order, i.e. file order for folders): closed-set rank-1
and rank-5 over the other images; open-set, a seeded share of persons is left unenrolled and must
be rejected at the verification threshold.
"""

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from tripletface import metrics
from tripletface.data.folders import IndexPair, Pair, resize, sample_pairs
from tripletface.distances import paired_distances
from tripletface.errors import InputError
from tripletface.models.base import Encoder

#: Images per forward pass while embedding a data set.
BATCH_SIZE = 64


def far_name(far: float) -> str:
    """A FAR written the way FaceNet's figure is named: 1e-3, 2.5e-4."""
    mantissa, exponent = f"{far:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


@dataclass
class EvaluationReport:
    """Figures of one evaluation; ``to_dict()`` gives the JSON form (``val_at_far_1e-3``...)."""

    verification_accuracy: float  # mean over folds, LFW protocol
    verification_accuracy_std: float
    val_at_far: float  # VAL at FAR <= far (FaceNet)
    far: float
    val_threshold: float
    roc_auc: float
    eer: float
    threshold: float  # accuracy-maximising squared distance over all pairs
    rank1: float
    rank5: float
    open_set_rejection: float  # unenrolled persons' probes rejected at `threshold`
    open_set_identification: float  # enrolled persons' probes accepted with the right identity
    pairs: int
    same_pairs: int
    different_pairs: int
    probes: int
    persons: int
    images: int
    unseen_persons: int
    distances: np.ndarray = field(repr=False)  # squared distance of each pair
    same: np.ndarray = field(repr=False)  # whether each pair shows one person

    def to_dict(self) -> dict:
        """JSON-ready figures: floats and ints only, NaN (nothing to count) as None."""
        out = {}
        for key, value in asdict(self).items():
            if key in ("distances", "same"):
                continue
            if key == "val_at_far":
                key = f"val_at_far_{far_name(self.far)}"
            out[key] = None if isinstance(value, float) and math.isnan(value) else value
        return out


def prepare(
    images: Sequence[torch.Tensor],
    size: tuple[int, int],
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """N x 3 x size uint8 batch from 3 x H x W uint8 images, after the optional transform."""
    if transform is not None:
        images = [transform(image) for image in images]
    return torch.stack([resize(image, size) for image in images])


def embed_dataset(
    encoder: Encoder,
    dataset,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = BATCH_SIZE,
    progress: bool = False,
) -> torch.Tensor:
    """N x D embeddings of every item of a labelled data set, resized to encoder.input_size."""
    parts = []
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="embedding", unit="batch", disable=not progress):
        images = [dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))]
        parts.append(encoder.embed(prepare(images, encoder.input_size, transform)))
    if not parts:
        raise InputError("the data set is empty: nothing to evaluate")
    return torch.cat(parts)


def pair_indices(pairs: Sequence[Pair | IndexPair], dataset) -> list[IndexPair]:
    """Pairs as data set indices; file pairs whose images the data set skipped are dropped."""
    if all(isinstance(pair[0], (int, np.integer)) for pair in pairs):
        return [IndexPair(int(i), int(j), bool(same)) for i, j, same in pairs]
    index = {Path(path).resolve(): i for i, path in enumerate(dataset.paths)}
    kept = []
    for path1, path2, same in pairs:
        i, j = index.get(Path(path1).resolve()), index.get(Path(path2).resolve())
        if i is not None and j is not None:
            kept.append(IndexPair(i, j, bool(same)))
    return _kept(kept, pairs, "whose images are not in the data set (unreadable or outside it)")


def distinct_pairs(pairs: list[IndexPair]) -> list[IndexPair]:
    """The pairs of two different items: an image paired with itself (or, with ``probes``, with
    its own camera version) says nothing about the encoder, so it is dropped with a warning."""
    kept = [pair for pair in pairs if pair.first != pair.second]
    return _kept(kept, pairs, "of an image with itself: a pair names two different images")


def _kept(kept: list[IndexPair], pairs: Sequence, why: str) -> list[IndexPair]:
    """``kept``, after a warning that says how many of ``pairs`` were dropped and ``why``."""
    if len(kept) < len(pairs):
        warnings.warn(f"dropped {len(pairs) - len(kept)} of {len(pairs)} pairs {why}", stacklevel=4)
    return kept


def check_same_items(dataset, probes) -> None:
    """InputError unless ``probes`` holds as many items as ``dataset``, with the same labels."""
    if len(probes) != len(dataset):
        raise InputError(
            f"probes hold {len(probes)} items and the data set {len(dataset)}: pass the data "
            "set's own items seen another way, in its order (e.g. data.chips.in_condition)"
        )
    pairs = zip(dataset.labels, probes.labels, strict=True)
    wrong = next((i for i, (ours, theirs) in enumerate(pairs) if ours != theirs), None)
    if wrong is not None:
        raise InputError(
            f"probe item {wrong} has label {probes.labels[wrong]} and the data set's "
            f"{dataset.labels[wrong]}: pass the data set's own items, in its order"
        )


def balanced_pairs(dataset, count: int, seed: int) -> list[IndexPair]:
    """Up to ``count`` seeded pairs, as many same-person as different-person ones (like LFW's),
    so that chance accuracy stays 1/2 when a small data set runs out of one kind."""
    pairs = sample_pairs(dataset, count // 2, count // 2, seed)
    same = [p for p in pairs if p.same]
    different = [p for p in pairs if not p.same]
    kept = min(len(same), len(different))
    return same[:kept] + different[:kept]


def first_image_split(labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(gallery, probes) indices: the first item of each label enrolled, the others probes."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    probes = np.setdiff1d(np.arange(len(labels)), first)
    return np.sort(first), probes


def open_set_split(
    labels: Sequence[int], unseen_share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(gallery, probes) indices with a seeded share of persons unenrolled, all their images probes.

    At least one person stays enrolled and, when the share is above 0, one is left out.
    """
    if not 0 <= unseen_share < 1:
        raise InputError(f"unseen share must lie in [0, 1), got {unseen_share}")
    labels = np.asarray(labels)
    persons = np.unique(labels)
    count = round(unseen_share * len(persons))
    count = min(max(count, int(unseen_share > 0)), len(persons) - 1)
    unseen = np.random.default_rng(seed).choice(persons, size=count, replace=False)
    gallery, _ = first_image_split(labels)
    enrolled = gallery[~np.isin(labels[gallery], unseen)]
    return enrolled, np.setdiff1d(np.arange(len(labels)), enrolled)


def evaluate(
    encoder: Encoder,
    dataset,
    pairs: Sequence[Pair | IndexPair] | None = None,
    pairs_count: int = 6000,
    seed: int = 0,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    unseen_share: float = 0.2,
    folds: int = 10,
    far: float = 1e-3,
    progress: bool = False,
    probes: Dataset | None = None,
) -> EvaluationReport:
    """Verification and identification figures of ``encoder`` on a labelled data set.

    ``pairs``: LFW file pairs (folds in file order) or index pairs; None draws up to
    ``pairs_count`` balanced pairs with ``seed`` (which also seeds the folds and the open-set
    split).
    ``transform`` maps each uint8 3 x H x W image before it is resized to the encoder's input.
    ``probes``: the same items seen another way, index for index (e.g. through a camera,
    ``data.chips.in_condition``): every pair's second image and every probe come from it, the
    gallery and every pair's first image from ``dataset`` (good photos enrolled, the camera's
    recognised).
    """
    if probes is not None:
        check_same_items(dataset, probes)
    if pairs is None:
        pairs = balanced_pairs(dataset, pairs_count, seed)
        fold_seed = seed
    else:
        pairs = distinct_pairs(pair_indices(pairs, dataset))
        fold_seed = None
    if len(pairs) < folds:
        raise InputError(
            f"{len(pairs)} verification pairs are fewer than the {folds} folds: "
            "use a larger data set or more pairs"
        )
    labels = np.asarray(dataset.labels)
    gallery, probe_items = first_image_split(labels)
    if len(probe_items) == 0:
        raise InputError("no person has a second image to identify: one-shot needs 2 per person")
    open_gallery, open_probes = open_set_split(labels, unseen_share, seed)
    embeddings = embed_dataset(encoder, dataset, transform, progress=progress)
    probe_embeddings = embeddings
    if probes is not None:
        probe_embeddings = embed_dataset(encoder, probes, transform, progress=progress)

    first = torch.tensor([p.first for p in pairs])
    second = torch.tensor([p.second for p in pairs])
    distances = paired_distances(embeddings[first], probe_embeddings[second]).double().numpy()
    same = np.array([p.same for p in pairs], dtype=bool)
    accuracy, accuracy_std, _ = metrics.verification_accuracy_kfold(
        distances, same, folds, fold_seed
    )
    val, val_threshold = metrics.val_at_far(distances, same, far)
    threshold = metrics.best_threshold(distances, same)

    ranks = metrics.one_shot_identification(
        embeddings[gallery],
        labels[gallery],
        probe_embeddings[probe_items],
        labels[probe_items],
        ks=(1, 5),
    )
    open_set = metrics.open_set_rejection(
        embeddings[open_gallery],
        labels[open_gallery],
        probe_embeddings[open_probes],
        labels[open_probes],
        threshold,
    )
    return EvaluationReport(
        verification_accuracy=accuracy,
        verification_accuracy_std=accuracy_std,
        val_at_far=val,
        far=far,
        val_threshold=val_threshold,
        roc_auc=metrics.roc_auc(distances, same),
        eer=metrics.eer(distances, same),
        threshold=threshold,
        rank1=ranks["rank1"],
        rank5=ranks["rank5"],
        open_set_rejection=open_set["rejection_rate"],
        open_set_identification=open_set["identification_rate"],
        pairs=len(pairs),
        same_pairs=int(same.sum()),
        different_pairs=int((~same).sum()),
        probes=len(probe_items),
        persons=len(np.unique(labels)),
        images=len(labels),
        unseen_persons=len(np.setdiff1d(labels, labels[open_gallery])),
        distances=distances,
        same=same,
    )
