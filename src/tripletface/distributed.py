"""Mining over the global batch when training runs on several processes (torch.distributed).

Without an initialised process group every function here is the single-process identity, so the
training step reads the same either way.
"""

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the group, 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank, 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0 (the only process that writes files and prints progress)."""
    return rank() == 0


def init_from_environment() -> bool:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1); True if joined.

    gloo on the CPU, NCCL when CUDA is available; the rendezvous comes from MASTER_ADDR/PORT.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (rows may differ in number), in rank order, without gradient."""
    count = torch.tensor([len(tensor)], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: len(tensor)] = tensor.detach()
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return [part[: int(c.item())] for part, c in zip(parts, counts, strict=True)]


def all_gather_embeddings(
    embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: all ranks' N_r x D embeddings and N_r labels concatenated in rank order.

    all_gather does not carry gradients, so this rank's own rows are put back in their slot: the
    loss over the global batch then differentiates through the local shard, and summing the
    parameter gradients over ranks (DistributedDataParallel averages them, hence the training
    step scales its loss by the world size) gives the gradient of the global-batch loss.
    Identity when not distributed.
    """
    if not is_distributed():
        return embeddings, labels
    parts = _gather(embeddings)
    parts[rank()] = embeddings
    return torch.cat(parts), torch.cat(_gather(labels))
