"""P x K batches: P persons with K images each, the batches online triplet mining needs."""

import math
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from tripletface.errors import InputError


class PKSampler(Sampler[list[int]]):
    """Batch sampler of P persons x K images; an epoch covers every image at least once.

    A person's images are shuffled and cut into groups of K; the last group is filled up with
    other images of the same person (drawn with replacement when the person has fewer than K).
    Each batch takes one group from each of P distinct persons, always from the persons with the
    most groups left, so the epoch ends after max(most groups of one person, ceil(groups / P))
    batches; a last batch short of persons is filled with fresh groups of other persons.
    Persons with a single image cannot give an anchor-positive pair and are set aside.

    With `num_replicas` > 1 (distributed training), every rank draws the same global batches from
    `seed` and the epoch, and yields its own P / num_replicas persons of each: the ranks' shares
    are disjoint and together form the P x K batch that mining sees after gathering.
    Each iteration starts a new epoch; `set_epoch` chooses it explicitly.
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        p: int,
        k: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if p < 2 or k < 2:
            raise InputError(
                f"P x K batches need p >= 2 persons and k >= 2 images, got p={p}, k={k}"
            )
        if num_replicas < 1 or not 0 <= rank < num_replicas or p % num_replicas:
            raise InputError(
                f"p={p} persons must split evenly over num_replicas={num_replicas} ranks "
                f"(rank={rank}): choose p as a multiple of the number of ranks"
            )
        by_person: dict[int, list[int]] = {}
        for index, label in enumerate(torch.as_tensor(labels).tolist()):
            by_person.setdefault(label, []).append(index)
        self.persons = [images for images in by_person.values() if len(images) >= 2]
        singles = len(by_person) - len(self.persons)
        if singles:
            warnings.warn(
                f"{singles} of {len(by_person)} persons have a single image and are set aside "
                "(no anchor-positive pair)",
                stacklevel=2,
            )
        if len(self.persons) < 2:
            raise InputError(
                f"{len(self.persons)} persons have two or more images; triplets need at least two "
                "such persons: add images or persons"
            )
        if p > len(self.persons):
            raise InputError(
                f"p={p} exceeds the {len(self.persons)} persons with two or more images: lower p"
            )
        self.p, self.k, self.seed = p, k, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._groups = [math.ceil(len(images) / k) for images in self.persons]

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        return max(max(self._groups), math.ceil(sum(self._groups) / self.p))

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw the batches of `epoch`."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        share = self.p // self.num_replicas
        mine = slice(self.rank * share, (self.rank + 1) * share)
        for groups in self._batches(generator):
            yield [index for group in groups[mine] for index in group]

    def _batches(self, generator: torch.Generator) -> Iterator[list[list[int]]]:
        """Each batch as P groups of K images of distinct persons, those with most left first."""
        queues = [self._cut(person, generator) for person in range(len(self.persons))]
        left = torch.tensor([len(queue) for queue in queues], dtype=torch.float64)
        for _ in range(len(self)):
            # A random fraction below 1 orders persons with equally many groups left at random.
            keys = left + torch.rand(len(left), generator=generator, dtype=torch.float64)
            batch = []
            for person in torch.topk(keys, self.p).indices.tolist():
                if queues[person]:
                    batch.append(queues[person].pop())
                    left[person] -= 1
                else:
                    batch.append(self._cut(person, generator)[0])
            yield batch

    def _cut(self, person: int, generator: torch.Generator) -> list[list[int]]:
        """The person's images in random order, cut into groups of K, the last one filled up.

        The filling comes from the person's other images, or with replacement when the person
        has fewer than K images.
        """
        images = self.persons[person]
        order = [images[i] for i in torch.randperm(len(images), generator=generator).tolist()]
        groups = [order[i : i + self.k] for i in range(0, len(order), self.k)]
        need = self.k - len(groups[-1])
        if len(images) >= self.k:
            others = order[: len(order) - len(groups[-1])]
            picks = torch.randperm(len(others), generator=generator)[:need].tolist()
        else:
            others = images
            picks = torch.randint(len(images), (need,), generator=generator).tolist()
        groups[-1] = groups[-1] + [others[i] for i in picks]
        return groups
