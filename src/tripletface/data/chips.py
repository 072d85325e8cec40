"""Aligned face chips of a folder of real photos (one sub-folder per person), cached on disk.

Every photo is read once, all its faces detected (``tripletface.faces.detect``) and cut into
chips in dlib's convention (``tripletface.faces.align``). A labelled photo stands for one person,
so one of its faces is chosen by a rule (``FACE_RULES``): the face nearest the photo's centre (the
convention of LFW, whose photos are framed on the labelled person), the largest, or the face most
similar to that person's other photos. On celeba299 the last was best and the centre worst
(bench/face_choice.py): "similar" is the default where an encoder is at hand, "largest" where
not. Photos without a face and unreadable files are counted, named in one warning and skipped;
with ``strict`` an unreadable file is fatal. Detection costs far more than training on a chip, so
the chips are kept in a cache file (``.npz``): each photo's entry is reused while its
relative path, byte size and modification time are unchanged and the chip size, padding and
detector settings are the same; changed or new photos alone are detected again. The cache is
written atomically.
"""

import functools
import json
import lzma
import multiprocessing as mp
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from tripletface.cache import write_atomic
from tripletface.data.conditions import check_condition, on_chips
from tripletface.data.folders import FolderDataset
from tripletface.data.images import load_image, person_images
from tripletface.errors import InputError
from tripletface.faces.align import DLIB_CHIP_PADDING, DLIB_CHIP_SIZE, face_chips
from tripletface.faces.choice import (
    DEFAULT_FACE_RULE,
    FACE_RULES,
    centre_face,
    largest_face,
    similar_faces,
)
from tripletface.faces.detect import FaceDetector
from tripletface.workers import worker_pool

#: Bumped when the cache layout or the way chips are cut changes; older caches are rebuilt.
CACHE_VERSION = 2
#: How many photos a warning names before it only counts the rest.
_NAMED_IN_WARNING = 10
# Status of a photo in the cache: an index into the chips, or one of these.
_NO_FACE, _UNREADABLE = -1, -2
# What reading a damaged .npz raises besides KeyError and the like: zipfile reports a bad archive or
# CRC as BadZipFile and a damaged header's method, flags or version as NotImplementedError, and a
# damaged compression method byte hands the data to a decompressor that fails in its own way.
_DAMAGED_NPZ = (
    zipfile.BadZipFile,
    NotImplementedError,
    zlib.error,
    lzma.LZMAError,
    OSError,
    KeyError,
    ValueError,
    IndexError,
    EOFError,
)


class ChipSet(Dataset):
    """Face chips in memory: items (uint8 tensor 3 x S x S, int label).

    ``chips`` is N x 3 x S x S uint8; ``labels[i]`` and ``paths[i]`` belong to item i and
    ``classes[label]`` names the person.
    """

    def __init__(
        self, chips: torch.Tensor, labels: Sequence[int], classes: Sequence[str], paths: Sequence
    ) -> None:
        if chips.ndim != 4 or chips.shape[1] != 3 or chips.dtype != torch.uint8:
            raise InputError(f"chips must be N x 3 x S x S uint8, got {tuple(chips.shape)}")
        if not len(chips) == len(labels) == len(paths):
            raise InputError(
                f"{len(chips)} chips, {len(labels)} labels and {len(paths)} paths differ in count"
            )
        self.chips = chips
        self.labels = [int(label) for label in labels]
        self.classes = list(classes)
        self.paths = [Path(path) for path in paths]

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.chips[index], self.labels[index]

    def tensors(self) -> tuple[torch.Tensor, list[int]]:
        """(N x 3 x S x S uint8 chips, N labels): the whole set, for training from memory."""
        return self.chips, self.labels

    def persons(self, names: Sequence[str]) -> "ChipSet":
        """The chips of the named persons only, labelled 0.. in the order of ``names``."""
        unknown = sorted(set(names) - set(self.classes))
        if unknown:
            raise InputError(f"persons {unknown[:5]} are not in this set of chips")
        new_label = {self.classes.index(name): k for k, name in enumerate(names)}
        keep = [i for i, label in enumerate(self.labels) if label in new_label]
        return ChipSet(
            self.chips[keep],
            [new_label[self.labels[i]] for i in keep],
            list(names),
            [self.paths[i] for i in keep],
        )


@dataclass(frozen=True)
class _Entry:
    """What the cache knows about one photo: its stat, and its faces or why it has none.

    ``chips`` is F x S x S x 3 (one per face, largest first), ``boxes`` F x 4 (left, top, right,
    bottom) and ``shape`` the photo's (height, width)."""

    size: int
    mtime_ns: int
    status: int  # 0 when the photo has faces, _NO_FACE or _UNREADABLE
    reason: str
    chips: np.ndarray | None
    boxes: np.ndarray | None = None
    shape: tuple[int, int] = (0, 0)


class AlignedFaces(ChipSet):
    """One face of every photo under ROOT/PERSON/, as ``size`` x ``size`` aligned chips.

    ``padding`` is dlib's chip padding (0.25 for dlib-resnet). ``detector`` defaults to
    FaceDetector("auto"): HOG, then HOG on a doubled photo, then the CNN. ``cache`` is the path
    of the .npz cache (None: no cache). ``rule`` (one of FACE_RULES) chooses the face of a photo
    with several; "similar" compares faces with ``embed`` (N x S x S x 3 uint8 chips to N x D
    unit-length embeddings): without it the rule is "largest", and the largest face is taken too
    for a person with a single photo. ``rule`` afterwards names the rule applied. After construction
    ``no_face`` lists photos where no face was found, ``skipped`` (path, reason) the unreadable
    ones, ``several_faces`` the photos with more than one face, ``examined`` how many photos were
    read this time (not in the cache) and ``reused`` how many came from the cache. Photos are
    detected in ``workers`` forked processes (one at a time in this one when 1). Persons left
    without any chip are dropped. With ``strict`` the first unreadable photo (in person, then
    file order) raises InputError instead, once the cache is written; photos without a face
    are still skipped, as ``strict`` is about files (FolderDataset's), not about faces.
    """

    def __init__(
        self,
        root: str | Path,
        size: int = DLIB_CHIP_SIZE,
        padding: float = DLIB_CHIP_PADDING,
        detector: FaceDetector | None = None,
        cache: str | Path | None = None,
        progress: bool = False,
        rule: str = DEFAULT_FACE_RULE,
        embed: Callable[[np.ndarray], np.ndarray] | None = None,
        workers: int = 1,
        strict: bool = False,
    ) -> None:
        if rule not in FACE_RULES:
            raise InputError(f"unknown face rule {rule!r}: choose one of {', '.join(FACE_RULES)}")
        self.root = Path(root)
        self.rule = "largest" if rule == "similar" and embed is None else rule
        self.size, self.padding = int(size), float(padding)
        detector = detector or FaceDetector("auto")
        self.cache = None if cache is None else Path(cache)
        persons = person_images(self.root)
        settings = _settings(self.size, self.padding, detector)
        cached = _read_cache(self.cache, settings) if self.cache else {}
        entries: dict[str, _Entry] = {}
        self.examined = self.reused = 0
        files = [path for paths in persons.values() for path in paths]
        stale = []
        for path in files:
            key = path.relative_to(self.root).as_posix()
            entry, stat = cached.get(key), path.stat()
            if entry is None or (entry.size, entry.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                stale.append((key, path, stat))
            else:
                entries[key] = entry
        self.reused, self.examined = len(entries), len(stale)
        with tqdm(
            total=len(stale), desc="finding faces", unit="photo", disable=not progress
        ) as bar:
            detect = functools.partial(
                _detect, size=self.size, padding=self.padding, detector=detector
            )
            found = _map(detect, [(path, stat) for _, path, stat in stale], workers)
            for (key, _, _), entry in zip(stale, found, strict=True):
                entries[key] = entry
                bar.update()
        if self.cache and (self.examined or set(entries) != set(cached)):
            _write_cache(self.cache, settings, entries, self.size)

        chips, labels, classes, paths = [], [], [], []
        self.no_face: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        self.several_faces: list[Path] = []
        for name, person_files in persons.items():
            found = []
            for path in person_files:
                entry = entries[path.relative_to(self.root).as_posix()]
                if entry.status == _NO_FACE:
                    self.no_face.append(path)
                elif entry.status == _UNREADABLE and strict:
                    raise InputError(
                        f"{path}: unreadable image ({entry.reason}); "
                        "remove it or run without --strict"
                    )
                elif entry.status == _UNREADABLE:
                    self.skipped.append((path, entry.reason))
                else:
                    found.append((path, entry))
                    if len(entry.chips) > 1:
                        self.several_faces.append(path)
            if found:
                paths += [path for path, _ in found]
                chips += [entry for _, entry in found]
                labels += [len(classes)] * len(found)
                classes.append(name)
        chips = _chosen_chips(chips, labels, self.rule, embed)
        _warn_left_out(self.root, self.no_face, self.skipped)
        if not chips:
            raise InputError(
                f"{self.root}: no face found in any photo of the person folders "
                f"({len(files)} photos); check the folder or try the CNN detector"
            )
        stacked = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).contiguous()
        super().__init__(stacked, labels, classes, paths)

    def summary(self) -> str:
        """One line: photos, chips, persons, photos without a face, unreadable, several faces
        and the rule that chose among them, cache use."""
        return (
            f"{self.root}: {len(self)} face chips of {len(self.classes)} persons "
            f"({self.size} x {self.size}, padding {self.padding}); {len(self.no_face)} photos "
            f"without a face and {len(self.skipped)} unreadable skipped; "
            f"{len(self.several_faces)} with several faces (the {self.rule} one taken); "
            f"{self.reused} from the cache, {self.examined} examined"
        )


def _chosen_chips(
    entries: list[_Entry], labels: list[int], rule: str, embed: Callable | None
) -> list[np.ndarray]:
    """The chip of each photo's face that ``rule`` chooses (see FACE_RULES)."""
    if rule == "centre":
        return [e.chips[centre_face(e.boxes, e.shape)] for e in entries]
    largest = [largest_face(e.boxes) for e in entries]
    if rule == "largest":
        picks = largest
    else:
        wanted = {labels[i] for i, e in enumerate(entries) if len(e.chips) > 1}
        embedded = [
            embed(e.chips) if labels[i] in wanted else np.zeros((len(e.chips), 1), np.float32)
            for i, e in enumerate(entries)
        ]
        similar = similar_faces(embedded, labels)
        picks = [big if s < 0 else s for s, big in zip(similar, largest, strict=True)]
    return [e.chips[k] for e, k in zip(entries, picks, strict=True)]


def photo_dataset(
    root: str | Path,
    size: tuple[int, int],
    padding: float | None,
    cache: str | Path | None = None,
    strict: bool = False,
    progress: bool = False,
    rule: str = DEFAULT_FACE_RULE,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> "AlignedFaces | FolderDataset":
    """ROOT/PERSON/ photos as an encoder sees them: aligned size x size face chips when it takes
    chips (``padding`` is its chip_padding; ``rule`` and ``embed`` as in AlignedFaces), else the
    whole images resized to size (h, w); with ``strict`` either refuses an unreadable photo."""
    if padding is None:
        return FolderDataset(root, size=size, strict=strict, progress=progress)
    if size[0] != size[1]:
        raise InputError(f"aligned face chips are square, not {size[0]} x {size[1]}")
    return AlignedFaces(
        root,
        size[0],
        padding,
        cache=cache,
        progress=progress,
        rule=rule,
        embed=embed,
        strict=strict,
    )


def _settings(size: int, padding: float, detector: FaceDetector) -> str:
    """The settings a cached chip depends on, as a canonical JSON string."""
    return json.dumps(
        {
            "version": CACHE_VERSION,
            "size": size,
            "padding": padding,
            "detector": {
                name: getattr(detector, name, None)
                for name in ("method", "upsample", "max_side", "threshold")
            },
        },
        sort_keys=True,
    )


def _map(function: Callable, items: list[tuple], workers: int) -> Iterator:
    """function(*item) of each item in order, in ``workers`` forked processes when there are
    several (the function, detector included, is inherited, not pickled)."""
    if workers <= 1 or len(items) < 2 or "fork" not in mp.get_all_start_methods():
        return (function(*item) for item in items)
    global _TASK
    _TASK = function
    pool = worker_pool(workers)  # its workers die with this process, also on kill -9

    def results() -> Iterator:
        with pool:
            yield from pool.map(_run_task, items, chunksize=8)

    return results()


_TASK: Callable | None = None


def _run_task(item: tuple):
    """The forked worker's side of ``_map``."""
    return _TASK(*item)


def _detect(path: Path, stat, size: int, padding: float, detector: FaceDetector) -> _Entry:
    """The cache entry of one photo: the chips and boxes of all its faces, or why there are none."""
    try:
        image = load_image(path)
    except InputError as error:
        # The entry is kept under its path, so its reason leaves the path out (as FolderDataset's).
        reason = str(error).removeprefix(f"{path}: ")
        return _Entry(stat.st_size, stat.st_mtime_ns, _UNREADABLE, reason, None)
    faces = detector.detect(image)
    if not faces:
        return _Entry(stat.st_size, stat.st_mtime_ns, _NO_FACE, "no face found", None)
    boxes = np.array([face.box for face in faces], dtype=np.int64)
    chips = face_chips(image, faces, size, padding)
    return _Entry(stat.st_size, stat.st_mtime_ns, 0, "", chips, boxes, image.shape[:2])


def _read_cache(path: Path, settings: str) -> dict[str, _Entry]:
    """Entries of a cache written with the same settings; {} if absent, stale or unreadable."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["settings"]) != settings:
                return {}
            chips, boxes = data["chips"], data["boxes"]
            starts = np.cumsum(data["counts"]) - data["counts"]
            return {
                str(key): _Entry(
                    int(size),
                    int(mtime),
                    int(status),
                    str(reason),
                    chips[start : start + count] if status >= 0 else None,
                    boxes[start : start + count] if status >= 0 else None,
                    (int(shape[0]), int(shape[1])),
                )
                for key, size, mtime, status, reason, start, count, shape in zip(
                    data["files"],
                    data["sizes"],
                    data["mtimes"],
                    data["status"],
                    data["reasons"],
                    starts,
                    data["counts"],
                    data["shapes"],
                    strict=True,
                )
            }
    except _DAMAGED_NPZ as error:
        warnings.warn(
            f"face chip cache {path} is unreadable ({error}); detecting every face again",
            stacklevel=3,
        )
        return {}


def _write_cache(path: Path, settings: str, entries: dict[str, _Entry], size: int) -> None:
    """Write every entry to the .npz cache at ``path`` atomically."""
    keys = sorted(entries)
    with_faces = [entries[k] for k in keys if entries[k].chips is not None]
    arrays = {
        "settings": np.array(settings),
        "files": np.array(keys, dtype=str),
        "sizes": np.array([entries[k].size for k in keys], dtype=np.int64),
        "mtimes": np.array([entries[k].mtime_ns for k in keys], dtype=np.int64),
        "status": np.array([entries[k].status for k in keys], dtype=np.int64),
        "counts": np.array([_count(entries[k]) for k in keys], dtype=np.int64),
        "shapes": np.array([entries[k].shape for k in keys], dtype=np.int64).reshape(-1, 2),
        "reasons": np.array([entries[k].reason for k in keys], dtype=str),
        "chips": np.concatenate([e.chips for e in with_faces])
        if with_faces
        else np.zeros((0, size, size, 3), np.uint8),
        "boxes": np.concatenate([e.boxes for e in with_faces])
        if with_faces
        else np.zeros((0, 4), np.int64),
    }
    write_atomic(path, lambda stream: np.savez(stream, **arrays))


def _count(entry: _Entry) -> int:
    """How many faces a cache entry holds."""
    return 0 if entry.chips is None else len(entry.chips)


def _warn_left_out(root: Path, no_face: list[Path], unreadable: list[tuple[Path, str]]) -> None:
    """One warning naming (the first few) photos without a face and unreadable files."""
    named = [f"{path} (no face)" for path in no_face]
    named += [f"{path} ({reason})" for path, reason in unreadable]
    if not named:
        return
    more = len(named) - _NAMED_IN_WARNING
    warnings.warn(
        f"{root}: skipped {len(no_face)} photo(s) without a face and {len(unreadable)} "
        f"unreadable: {'; '.join(named[:_NAMED_IN_WARNING])}"
        + (f"; and {more} more" if more > 0 else ""),
        stacklevel=3,
    )


def in_condition(chips: ChipSet, condition: str, seed: int, padding: float) -> ChipSet:
    """The same items with every chip (dlib ``padding``) in camera ``condition``
    (data.conditions.on_chips, settings drawn with ``seed``)."""
    pixels = np.ascontiguousarray(chips.chips.permute(0, 2, 3, 1).numpy())
    changed = torch.from_numpy(on_chips(condition, pixels, seed, padding)).permute(0, 3, 1, 2)
    return ChipSet(changed.contiguous(), chips.labels, chips.classes, chips.paths)


class CameraDraws(Dataset):
    """A chip set's items twice over, for adapting to a camera: items 0..N-1 the clean chips,
    items N..2N-1 the same chips in camera ``condition`` (dlib ``padding``), the camera's
    settings drawn anew for every epoch (``set_epoch``, as fit calls it) from (seed, epoch, item).

    A fixed draw per photo lets the network learn those few thousand degradations; a fresh draw
    each epoch shows it the camera's whole range (the same chip at 24 and at 32 pixels, JPEG at
    30 and at 70). Items are (uint8 tensor 3 x S x S, int label); ``labels`` has 2N entries.
    """

    def __init__(self, chips: ChipSet, condition: str, seed: int, padding: float) -> None:
        self.clean, self.condition = chips, check_condition(condition)
        self.seed, self.padding, self.epoch = seed, padding, 0
        self.labels = chips.labels + chips.labels
        self.classes = chips.classes

    def set_epoch(self, epoch: int) -> None:
        """Draw the camera's settings of ``epoch`` from now on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return 2 * len(self.clean)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        count = len(self.clean)
        chip, label = self.clean[index % count]
        if index < count:
            return chip, label
        seed = np.random.SeedSequence([self.seed, self.epoch, index - count]).generate_state(1)
        pixels = chip.permute(1, 2, 0).numpy()[None]
        changed = on_chips(self.condition, pixels, int(seed[0]), self.padding)[0]
        return torch.from_numpy(changed).permute(2, 0, 1).contiguous(), label
