"""Mining over the global batch: two real gloo processes on 127.0.0.1 against one process."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tripletface.distributed import all_gather_embeddings, is_main_process, rank, world_size
from tripletface.losses import batch_triplet_loss

# Rank 0 holds 9 rows, rank 1 holds 7: shards of unequal size must gather too.
SHARDS = (9, 7)


def problem() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear]:
    """Inputs, labels and a linear encoder that every process rebuilds identically."""
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(sum(SHARDS), 10, generator=generator)
    labels = torch.randint(0, 4, (sum(SHARDS),), generator=generator)
    torch.manual_seed(5)
    return inputs, labels, torch.nn.Linear(10, 6)


def embed(model: torch.nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(model(inputs), dim=1)


def worker(local_rank: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=local_rank, world_size=2
    )
    try:
        inputs, labels, model = problem()
        start = sum(SHARDS[:local_rank])
        rows = slice(start, start + SHARDS[local_rank])
        emb, lab = all_gather_embeddings(embed(model, inputs[rows]), labels[rows])
        loss, stats = batch_triplet_loss(emb, lab, strategy="semihard", margin=0.2)
        loss.backward()
        grad = model.weight.grad.clone()
        dist.all_reduce(grad)
        torch.save(
            {
                "emb": emb.detach(),
                "labels": lab,
                "loss": loss.detach(),
                "grad": grad,
                "stats": stats.as_dict(),
                "rank": rank(),
                "main": is_main_process(),
            },
            f"{out}/rank{local_rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_identity_without_a_process_group():
    emb, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    gathered, gathered_labels = all_gather_embeddings(emb, labels)
    assert gathered is emb and gathered_labels is labels
    assert (world_size(), rank(), is_main_process()) == (1, 0, True)


@pytest.mark.slow  # two fresh processes joining a gloo group
def test_two_ranks_mine_the_global_batch_like_one_process(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    inputs, labels, model = problem()
    emb = embed(model, inputs)
    loss, stats = batch_triplet_loss(emb, labels, strategy="semihard", margin=0.2)
    loss.backward()
    assert [r["rank"] for r in results] == [0, 1]
    assert [r["main"] for r in results] == [True, False]
    for result in results:
        torch.testing.assert_close(result["emb"], emb.detach())
        assert torch.equal(result["labels"], labels)
        torch.testing.assert_close(result["loss"], loss.detach())
        assert result["stats"] == pytest.approx(stats.as_dict())
        # Each rank's gradient flows only through its own rows; their sum is the whole gradient.
        torch.testing.assert_close(result["grad"], model.weight.grad)
