"""Folder-per-person data sets (LFW, VGGFace2, CASIA-WebFace, ORL) and verification pairs.

The layout is ``ROOT/PERSON/IMAGE`` with one folder per person, images in JPEG, PNG, PGM, GIF or
WebP. Every image is decoded once when the data set is opened (JPEGs at 1/8 scale, which still
reads every byte), so that a truncated or corrupt file is reported with its path before training
starts rather than in the middle of an epoch; it is then skipped, or fatal with ``strict=True``.
"""

import itertools
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from tripletface.data.images import IMAGE_EXTENSIONS, load_image, person_images
from tripletface.errors import InputError

#: How many skipped files a warning names before it only counts the rest.
_NAMED_IN_WARNING = 10


class Pair(NamedTuple):
    """Two image files and whether they show the same person."""

    path1: Path
    path2: Path
    same: bool


class IndexPair(NamedTuple):
    """Two items of a data set, by index, and whether they show the same person."""

    first: int
    second: int
    same: bool


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 images (3 x H x W or N x 3 x H x W) resized to size = (height, width), antialiased."""
    size = (int(size[0]), int(size[1]))
    if tuple(images.shape[-2:]) == size:
        return images
    batch = images if images.ndim == 4 else images[None]
    out = torch.nn.functional.interpolate(
        batch.float(), size=size, mode="bilinear", antialias=True, align_corners=False
    )
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out if images.ndim == 4 else out[0]


def _decode_error(path: Path) -> str | None:
    """Why the image at path cannot be decoded, or None when it can."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        return str(error) or type(error).__name__
    return None


def _split_readable(files: list[Path], strict: bool) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(decodable files, (path, reason) of the others); with strict the first bad one raises."""
    readable, skipped = [], []
    for path in files:
        reason = _decode_error(path)
        if reason is None:
            readable.append(path)
        elif strict:
            raise InputError(
                f"{path}: unreadable image ({reason}); remove it or run without --strict"
            )
        else:
            skipped.append((path, reason))
    return readable, skipped


def _warn_skipped(root: Path, skipped: list[tuple[Path, str]]) -> None:
    """One warning naming the unreadable files (the first few) and counting them."""
    named = "; ".join(f"{path} ({reason})" for path, reason in skipped[:_NAMED_IN_WARNING])
    more = len(skipped) - _NAMED_IN_WARNING
    warnings.warn(
        f"{root}: skipped {len(skipped)} unreadable image(s): {named}"
        + (f"; and {more} more" if more > 0 else ""),
        stacklevel=3,
    )


class FolderDataset(Dataset):
    """Images of a folder per person: items are (uint8 tensor 3 x H x W, int label).

    ``classes[label]`` is the person's folder name, ``labels[i]`` and ``paths[i]`` belong to item
    i, in sorted person then file order. ``size`` = (height, width) resizes every image; without
    it images keep their own size. ``skipped`` lists the (path, reason) of unreadable files;
    ``progress`` shows a bar while the images are checked.
    Persons with a single image are kept: they serve as distractors.
    """

    def __init__(
        self,
        root: str | Path,
        size: tuple[int, int] | None = None,
        strict: bool = False,
        progress: bool = False,
    ) -> None:
        self.root = Path(root)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.classes: list[str] = []
        self.labels: list[int] = []
        self.paths: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        persons = person_images(self.root)
        total = sum(map(len, persons.values()))
        with tqdm(total=total, desc="checking images", disable=not progress) as bar:
            for name, files in persons.items():
                readable, skipped = _split_readable(files, strict)
                bar.update(len(files))
                self.skipped.extend(skipped)
                if readable:
                    self.labels.extend([len(self.classes)] * len(readable))
                    self.paths.extend(readable)
                    self.classes.append(name)
        if self.skipped:
            _warn_skipped(self.root, self.skipped)
        if not self.paths:
            raise InputError(
                f"{self.root}: no readable images in person folders; expected "
                f"ROOT/PERSON/IMAGE with one of {', '.join(sorted(IMAGE_EXTENSIONS))}"
            )
        if max(np.bincount(self.labels)) < 2:
            raise InputError(
                f"{self.root}: no person has 2 or more readable images; add a second image "
                "of at least one person (pairs and one-shot tests need them)"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def summary(self) -> str:
        """One line: images, persons, the size they are resized to, unreadable files skipped."""
        size = "own sizes" if self.size is None else f"resized to {self.size[0]} x {self.size[1]}"
        return (
            f"{self.root}: {len(self)} images of {len(self.classes)} persons ({size}); "
            f"{len(self.skipped)} unreadable skipped"
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = np.require(load_image(self.paths[index]), requirements="W")
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        if self.size is not None:
            image = resize(image, self.size)
        return image, self.labels[index]


def _image_path(root: Path, name: str, number: str, source: Path, line: int) -> Path:
    """LFW's file for image ``number`` of ``name``: ROOT/name/name_0001.jpg (or another format)."""
    try:
        stem = f"{name}_{int(number):04d}"
    except ValueError:
        raise InputError(
            f"{source} line {line}: image number {number!r} is not an integer"
        ) from None
    for extension in (".jpg", *sorted(IMAGE_EXTENSIONS)):
        path = root / name / (stem + extension)
        if path.is_file():
            return path
    raise InputError(
        f"{source} line {line}: {root / name / stem}.jpg does not exist; "
        "give the LFW image folder the pairs file refers to"
    )


def read_pairs(path: str | Path, root: str | Path) -> list[Pair]:
    """Pairs of LFW's pairs.txt ("10 300" header, ten sets) or pairsDevTrain/Test ("1100" header).

    Lines ``name n1 n2`` are same-person pairs, ``name1 n1 name2 n2`` different-person pairs;
    images resolve to ROOT/name/name_000n.jpg (any supported extension). File order is kept, so
    the ten sets stay the ten folds of the LFW protocol.
    """
    path, root = Path(path), Path(root)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the pairs file ({error})") from None
    numbered = [(k, line.split()) for k, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise InputError(f"{path}: empty pairs file; expected a header such as '10 300'")
    header_line, header = numbered[0]
    if not 1 <= len(header) <= 2 or not all(field.isdigit() for field in header):
        raise InputError(
            f"{path} line {header_line}: expected a header '10 300' (sets, pairs per set and "
            f"class) or '1100' (pairs per class), got {' '.join(header)!r}"
        )
    expected = 2 * int(np.prod([int(field) for field in header]))
    if len(numbered) - 1 != expected:
        raise InputError(
            f"{path}: the header announces {expected} pairs but the file holds "
            f"{len(numbered) - 1}; the file may be truncated"
        )
    pairs = []
    for line, fields in numbered[1:]:
        if len(fields) == 3:
            name, n1, n2 = fields
            pairs.append(
                Pair(
                    _image_path(root, name, n1, path, line),
                    _image_path(root, name, n2, path, line),
                    True,
                )
            )
        elif len(fields) == 4:
            name1, n1, name2, n2 = fields
            pairs.append(
                Pair(
                    _image_path(root, name1, n1, path, line),
                    _image_path(root, name2, n2, path, line),
                    False,
                )
            )
        else:
            raise InputError(
                f"{path} line {line}: expected 'name n1 n2' (same person) or "
                f"'name1 n1 name2 n2' (different persons), got {len(fields)} fields"
            )
    return pairs


def _draw_distinct(
    rng: np.random.Generator, n: int, total: int, draw, enumerate_all
) -> list[tuple[int, int]]:
    """n distinct unordered index pairs from draw(rng), or all of enumerate_all() if n >= total."""
    if n >= total:
        pairs = enumerate_all()
        return [pairs[i] for i in rng.permutation(len(pairs))]
    seen: set[tuple[int, int]] = set()
    pairs = []
    while len(pairs) < n:
        i, j = draw(rng)
        key = (min(i, j), max(i, j))
        if key not in seen:
            seen.add(key)
            pairs.append((i, j))
    return pairs


def sample_pairs(dataset, n_same: int, n_diff: int, seed: int = 0) -> list[IndexPair]:
    """Seeded verification pairs of a labelled data set: same-person pairs first, then different.

    Like LFW's: a same pair draws a person with 2 or more images uniformly, then two of their
    images; a different pair draws two persons uniformly, then one image of each. No pair repeats;
    when fewer distinct pairs exist than asked, all of them are returned.
    """
    if n_same < 0 or n_diff < 0:
        raise InputError(f"pair counts must be >= 0, got {n_same} same and {n_diff} different")
    labels = np.asarray(dataset.labels)
    order = np.argsort(labels, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if len(order) else []
    many = [g for g in groups if len(g) >= 2]
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    rng = np.random.default_rng(seed)

    def draw_same(rng):
        group = many[rng.integers(len(many))]
        i, j = rng.choice(len(group), size=2, replace=False)
        return int(group[i]), int(group[j])

    def draw_diff(rng):
        a, b = rng.choice(len(groups), size=2, replace=False)
        return int(rng.choice(groups[a])), int(rng.choice(groups[b]))

    def all_same():
        return [
            (int(g[i]), int(g[j]))
            for g in many
            for i in range(len(g))
            for j in range(i + 1, len(g))
        ]

    def all_diff():
        return [
            (int(i), int(j))
            for a, b in itertools.combinations(groups, 2)
            for i, j in itertools.product(a, b)
        ]

    total_same = int((sizes * (sizes - 1) // 2).sum())
    total_diff = int((sizes.sum() ** 2 - (sizes**2).sum()) // 2)
    same = _draw_distinct(rng, n_same, total_same, draw_same, all_same)
    diff = _draw_distinct(rng, n_diff, total_diff, draw_diff, all_diff)
    return [IndexPair(i, j, True) for i, j in same] + [IndexPair(i, j, False) for i, j in diff]
