"""What the celeba299 and ORL benches share: the data, the chip cache, memoised embeddings.

Detection costs far more than anything the benches measure, so the faces of every photo are
detected once (``AlignedFaces``, all faces kept) into ``~/.cache/tripletface-bench`` (or
``$TRIPLETFACE_BENCH_CACHE``), outside the repository; a re-run reuses them. celeba299 is
detected by HOG on the photo doubled, without the CNN fallback (on this shared 2-core machine the
CNN took most of the time for a few percent of the photos; those are left out and counted); ORL's
small grayscale photos by the library's "auto" chain (HOG at 2x, then 4x, then the CNN).
Embeddings of the pretrained encoder are memoised there too, keyed by the SHA-1 of each chip's
pixels, so that every rule, split and condition embeds a given chip once.
"""

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from tripletface.cache import write_atomic
from tripletface.data.chips import AlignedFaces
from tripletface.faces.detect import FaceDetector

DATA = Path(__file__).resolve().parents[2] / "shared/data"
CACHE = Path(os.environ.get("TRIPLETFACE_BENCH_CACHE", Path.home() / ".cache/tripletface-bench"))
CELEBA_CREDIT = (
    "CelebA (Liu, Luo, Wang, Tang, Deep Learning Face Attributes in the Wild, ICCV 2015)"
)


def photos(name: str, rule: str = "similar", embed=None) -> AlignedFaces:
    """The chips of DATA/name (celeba299 or orl), one face per photo chosen by ``rule``."""
    CACHE.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    faces = AlignedFaces(
        DATA / name,
        detector=FaceDetector("hog" if name == "celeba299" else "auto", upsample=1),
        cache=CACHE / f"{name}-chips.npz",
        rule=rule,
        embed=embed,
        progress=True,
        workers=2,
    )
    print(f"{faces.summary()} in {time.perf_counter() - start:.1f} s")
    return faces


def as_hwc(chips: torch.Tensor) -> np.ndarray:
    """N x 3 x S x S uint8 tensor as an N x S x S x 3 uint8 array."""
    return np.ascontiguousarray(chips.permute(0, 2, 3, 1).numpy())


class Memo:
    """Unit-length embeddings of chips by a fixed encoder, memoised by chip content (on disk
    under ``name``; in memory only when ``name`` is None).

    Callable on N x S x S x 3 uint8 arrays (the face rule's ``embed``); ``encoder`` quacks like
    an Encoder for ``tripletface.evaluate`` (N x 3 x S x S in, N x D out).
    """

    def __init__(self, encoder, name: str | None) -> None:
        self.model = encoder
        self.path = None if name is None else CACHE / f"{name}-embeddings.npz"
        self.known: dict[bytes, np.ndarray] = {}
        if self.path is not None and self.path.is_file():
            with np.load(self.path) as data:
                self.known = dict(zip(map(bytes, data["keys"]), data["rows"], strict=True))
        self.added = 0

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        keys = [hashlib.sha1(chip.tobytes()).digest() for chip in chips]
        missing = [i for i, key in enumerate(keys) if key not in self.known]
        if missing:
            batch = torch.from_numpy(np.ascontiguousarray(chips[missing])).permute(0, 3, 1, 2)
            rows = torch.nn.functional.normalize(self.model.embed(batch.float()), dim=1).numpy()
            self.known.update(zip([keys[i] for i in missing], rows, strict=True))
            self.added += len(missing)
        return np.stack([self.known[key] for key in keys])

    @property
    def encoder(self):
        """An object evaluate() takes as its encoder, answering from the memo."""
        memo = self

        class _Encoder:
            input_size = memo.model.input_size

            def embed(self, images: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(memo(as_hwc(images.to(torch.uint8))))

        return _Encoder()

    def save(self) -> None:
        """Write the memo atomically when it grew (and has a file)."""
        if not self.added or self.path is None:
            return
        keys = np.array([np.frombuffer(k, np.uint8) for k in self.known])
        rows = np.stack(list(self.known.values()))
        write_atomic(self.path, lambda stream: np.savez(stream, keys=keys, rows=rows))
        self.added = 0


def machine() -> str:
    """One line on the machine's state: cores, load, torch threads."""
    return (
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, torch threads "
        f"{torch.get_num_threads()} (the machine is shared with other engineers' jobs)"
    )
