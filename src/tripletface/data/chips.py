"""Aligned face chips of a folder of real photos (one sub-folder per person), cached on disk.

Every photo is read once, its largest face detected (``tripletface.faces.detect``) and cut into a
chip in dlib's convention (``tripletface.faces.align``). Photos without a face and unreadable
files are counted, named in one warning and skipped. Detection costs far more than training on a
chip, so the chips are kept in a cache file (``.npz``): each photo's entry is reused while its
relative path, byte size and modification time are unchanged and the chip size, padding and
detector settings are the same; changed or new photos alone are detected again. The cache is
written atomically.
"""

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from tripletface.data.folders import FolderDataset
from tripletface.data.images import load_image, person_images
from tripletface.errors import InputError
from tripletface.faces.align import DLIB_CHIP_PADDING, DLIB_CHIP_SIZE, face_chips
from tripletface.faces.detect import FaceDetector
from tripletface.models.checkpoint import write_atomic

#: Bumped when the cache layout or the way chips are cut changes; older caches are rebuilt.
CACHE_VERSION = 1
#: How many photos a warning names before it only counts the rest.
_NAMED_IN_WARNING = 10
# Status of a photo in the cache: an index into the chips, or one of these.
_NO_FACE, _UNREADABLE = -1, -2


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
    """What the cache knows about one photo: its stat, and its chip or why it has none."""

    size: int
    mtime_ns: int
    status: int  # index of the chip, _NO_FACE or _UNREADABLE
    reason: str
    chip: np.ndarray | None


class AlignedFaces(ChipSet):
    """The largest face of every photo under ROOT/PERSON/, as ``size`` x ``size`` aligned chips.

    ``padding`` is dlib's chip padding (0.25 for dlib-resnet). ``detector`` defaults to
    FaceDetector("auto"): HOG, then HOG on a doubled photo, then the CNN. ``cache`` is the path
    of the .npz cache (None: no cache). After construction ``no_face`` lists photos where no
    face was found, ``skipped`` (path, reason) the unreadable ones, ``examined`` how many photos
    were read this time (not in the cache) and ``reused`` how many came from the cache.
    Persons left without any chip are dropped.
    """

    def __init__(
        self,
        root: str | Path,
        size: int = DLIB_CHIP_SIZE,
        padding: float = DLIB_CHIP_PADDING,
        detector: FaceDetector | None = None,
        cache: str | Path | None = None,
        progress: bool = False,
    ) -> None:
        self.root = Path(root)
        self.size, self.padding = int(size), float(padding)
        detector = detector or FaceDetector("auto")
        self.cache = None if cache is None else Path(cache)
        persons = person_images(self.root)
        settings = _settings(self.size, self.padding, detector)
        cached = _read_cache(self.cache, settings) if self.cache else {}
        entries: dict[str, _Entry] = {}
        self.examined = self.reused = 0
        files = [path for paths in persons.values() for path in paths]
        with tqdm(
            total=len(files), desc="finding faces", unit="photo", disable=not progress
        ) as bar:
            for path in files:
                key = path.relative_to(self.root).as_posix()
                stat = path.stat()
                entry = cached.get(key)
                if entry is None or (entry.size, entry.mtime_ns) != (
                    stat.st_size,
                    stat.st_mtime_ns,
                ):
                    entry = _detect(path, stat, self.size, self.padding, detector)
                    self.examined += 1
                else:
                    self.reused += 1
                entries[key] = entry
                bar.update()
        if self.cache and (self.examined or set(entries) != set(cached)):
            _write_cache(self.cache, settings, entries, self.size)

        chips, labels, classes, paths = [], [], [], []
        self.no_face: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        for name, person_files in persons.items():
            found = []
            for path in person_files:
                entry = entries[path.relative_to(self.root).as_posix()]
                if entry.status == _NO_FACE:
                    self.no_face.append(path)
                elif entry.status == _UNREADABLE:
                    self.skipped.append((path, entry.reason))
                else:
                    found.append((path, entry.chip))
            if found:
                chips += [chip for _, chip in found]
                labels += [len(classes)] * len(found)
                paths += [path for path, _ in found]
                classes.append(name)
        _warn_left_out(self.root, self.no_face, self.skipped)
        if not chips:
            raise InputError(
                f"{self.root}: no face found in any photo of the person folders "
                f"({len(files)} photos); check the folder or try the CNN detector"
            )
        stacked = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).contiguous()
        super().__init__(stacked, labels, classes, paths)

    def summary(self) -> str:
        """One line: photos, chips, persons, photos without a face, unreadable, cache use."""
        return (
            f"{self.root}: {len(self)} face chips of {len(self.classes)} persons "
            f"({self.size} x {self.size}, padding {self.padding}); {len(self.no_face)} photos "
            f"without a face and {len(self.skipped)} unreadable skipped; "
            f"{self.reused} from the cache, {self.examined} examined"
        )


def photo_dataset(
    root: str | Path,
    size: tuple[int, int],
    padding: float | None,
    cache: str | Path | None = None,
    strict: bool = False,
    progress: bool = False,
) -> "AlignedFaces | FolderDataset":
    """ROOT/PERSON/ photos as an encoder sees them: aligned size x size face chips when it takes
    chips (``padding`` is its chip_padding), else the whole images resized to size (h, w)."""
    if padding is None:
        return FolderDataset(root, size=size, strict=strict, progress=progress)
    if size[0] != size[1]:
        raise InputError(f"aligned face chips are square, not {size[0]} x {size[1]}")
    return AlignedFaces(root, size[0], padding, cache=cache, progress=progress)


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


def _detect(path: Path, stat, size: int, padding: float, detector: FaceDetector) -> _Entry:
    """The cache entry of one photo: its largest face's chip, or why there is none."""
    try:
        image = load_image(path)
    except InputError as error:
        return _Entry(stat.st_size, stat.st_mtime_ns, _UNREADABLE, str(error), None)
    faces = detector.detect(image)
    if not faces:
        return _Entry(stat.st_size, stat.st_mtime_ns, _NO_FACE, "no face found", None)
    chip = face_chips(image, faces[:1], size, padding)[0]
    return _Entry(stat.st_size, stat.st_mtime_ns, 0, "", chip)


def _read_cache(path: Path, settings: str) -> dict[str, _Entry]:
    """Entries of a cache written with the same settings; {} if absent, stale or unreadable."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["settings"]) != settings:
                return {}
            chips = data["chips"]
            return {
                str(key): _Entry(
                    int(size),
                    int(mtime),
                    int(status),
                    str(reason),
                    chips[status] if status >= 0 else None,
                )
                for key, size, mtime, status, reason in zip(
                    data["files"],
                    data["sizes"],
                    data["mtimes"],
                    data["status"],
                    data["reasons"],
                    strict=True,
                )
            }
    except (OSError, KeyError, ValueError, IndexError, EOFError) as error:
        warnings.warn(
            f"face chip cache {path} is unreadable ({error}); detecting every face again",
            stacklevel=3,
        )
        return {}


def _write_cache(path: Path, settings: str, entries: dict[str, _Entry], size: int) -> None:
    """Write every entry to the .npz cache at ``path`` atomically."""
    keys = sorted(entries)
    chips, status = [], []
    for key in keys:
        entry = entries[key]
        if entry.chip is None:
            status.append(entry.status)
        else:
            status.append(len(chips))
            chips.append(entry.chip)
    arrays = {
        "settings": np.array(settings),
        "files": np.array(keys, dtype=str),
        "sizes": np.array([entries[k].size for k in keys], dtype=np.int64),
        "mtimes": np.array([entries[k].mtime_ns for k in keys], dtype=np.int64),
        "status": np.array(status, dtype=np.int64),
        "reasons": np.array([entries[k].reason for k in keys], dtype=str),
        "chips": np.stack(chips) if chips else np.zeros((0, size, size, 3), np.uint8),
    }
    write_atomic(path, lambda stream: np.savez(stream, **arrays))


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
