"""Speed and peak memory of tripletface's batch triplet loss against pytorch-metric-learning (PML).

Forward + backward on the CPU, B x 128 unit-length embeddings in a P x K label layout:
  all       tripletface "all"       vs PML TripletMarginLoss(0.2, LpDistance(power=2)), no miner
  hard      tripletface "hard"      vs PML BatchHardMiner + the same loss
  semihard  tripletface "semihard"  vs PML TripletMarginMiner("semihard") + the same loss
            (different definitions: FaceNet's one negative per pair vs PML's every negative
            with d(a,p) < d(a,n) < d(a,p) + margin; reported, not checked for equality)
  floor     one B x B x D matrix product.
Times are medians of runs interleaved with the floor and the competitor, one comparison at a
time; the peak memory of each configuration is measured in its own process (growth of the peak
RSS, VmHWM, over one run). Losses are compared with PML where the definitions coincide ("all" and
"hard", both averaged over active triplets as PML's default reducer does).

    python bench/loss_speed.py            # B = 128, 512, 1800 (PML "all" at 1800 takes ~10 s a run)
    python bench/loss_speed.py --quick    # B = 128, 512, fewer runs
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from pytorch_metric_learning import distances, losses, miners

from tripletface.losses import batch_triplet_loss

DIM = 128
MARGIN = 0.2
#: K images per person for each batch size B (P = B / K persons); FaceNet's batch is 45 x 40.
IMAGES_PER_PERSON = {128: 8, 512: 16, 1800: 40}
METHODS = (
    "floor",
    "ours all",
    "pml all",
    "ours hard",
    "pml hard",
    "ours semihard",
    "pml semihard",
)


def batch(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-length random embeddings (size x DIM) and P x K labels."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(size, DIM, generator=generator), dim=1)
    return x, torch.arange(size) // IMAGES_PER_PERSON.get(size, 8)


def make_step(method: str):
    """A function (x, labels) -> loss tensor for one method; the caller runs backward."""
    if method == "floor":
        return lambda x, labels: x.detach() @ x.detach().T
    if method.startswith("ours"):
        strategy = method.split()[1]
        return lambda x, labels: batch_triplet_loss(x, labels, strategy, MARGIN, active_only=True)[
            0
        ]
    squared = distances.LpDistance(power=2)
    loss = losses.TripletMarginLoss(margin=MARGIN, distance=squared)
    miner = {
        "pml all": None,
        "pml hard": miners.BatchHardMiner(distance=squared),
        "pml semihard": miners.TripletMarginMiner(MARGIN, "semihard", distance=squared),
    }[method]
    if miner is None:
        return lambda x, labels: loss(x, labels)
    return lambda x, labels: loss(x, labels, miner(x, labels))


def run_once(step, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Seconds for one forward (+ backward when the output has a gradient) on a fresh leaf."""
    leaf = x.clone().requires_grad_(True)
    start = time.perf_counter()
    out = step(leaf, labels)
    if out.grad_fn is not None:
        out.sum().backward()
    return time.perf_counter() - start


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in KiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def peak_memory_child(method: str, size: int) -> None:
    """Print the growth of this process's peak RSS (MiB) over one run of `method` at `size`."""
    step = make_step(method)
    run_once(step, *batch(16))  # load lazily initialised kernels before the baseline
    x, labels = batch(size)
    # ru_maxrss would start at the parent's peak (Linux carries it over fork + exec); VmHWM
    # belongs to this process's memory alone, and writing 5 to clear_refs resets it to VmRSS.
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = status_kib("VmRSS")
    run_once(step, x, labels)
    print(json.dumps({"peak_mib": (status_kib("VmHWM") - before) / 1024}))


def peak_memory(method: str, size: int, threads: int) -> float:
    """Peak extra memory (MiB) of one run, measured in a fresh process."""
    command = [sys.executable, __file__, "--child", method, str(size), "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def check_equal(size: int) -> dict[str, float]:
    """Relative difference between our loss and PML's where the definitions coincide."""
    x, labels = batch(size, seed=1)
    out = {}
    for what in ("all", "hard"):
        ours = make_step(f"ours {what}")(x, labels).item()
        theirs = make_step(f"pml {what}")(x, labels).item()
        out[what] = abs(ours - theirs) / max(abs(theirs), 1e-12)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 128, 512 and 3 runs")
    parser.add_argument("--sizes", type=int, nargs="+", help="batch sizes (default 128 512 1800)")
    parser.add_argument("--runs", type=int, help="timed runs per configuration (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "B"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        peak_memory_child(args.child[0], int(args.child[1]))
        return
    sizes = args.sizes or ([128, 512] if args.quick else [128, 512, 1800])
    runs = args.runs or (3 if args.quick else 5)
    load_before = os.getloadavg()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, D = {DIM}, "
        f"margin {MARGIN}, {runs} interleaved runs, load before {load_before}"
    )
    rows = []
    for size in sizes:
        x, labels = batch(size)
        steps = {method: make_step(method) for method in METHODS}
        for step in steps.values():
            run_once(step, *batch(16))
        times = {method: [] for method in METHODS}
        # Each comparison is interleaved with the floor on its own: PML's "all" and "semihard"
        # allocate gigabytes at B = 1800, and whatever runs next would pay the page faults of
        # fresh memory, which a training loop in its steady state does not.
        for what in ("all", "hard", "semihard"):
            for _ in range(runs):
                for method in ("floor", f"ours {what}", f"pml {what}"):
                    times[method].append(run_once(steps[method], x, labels))
        medians = {method: statistics.median(t) for method, t in times.items()}
        memory = {method: peak_memory(method, size, args.threads) for method in METHODS}
        differences = check_equal(size)
        rows.append((size, medians, memory, differences))
    print_table(rows)
    print(f"load after {os.getloadavg()}")


def print_table(rows) -> None:
    """One table: median ms, speed-up over PML, multiple of the floor, peak MiB, memory ratio."""
    header = (
        f"{'B':>5} {'method':<14} {'median ms':>10} {'PML/ours':>9} {'x floor':>8} "
        f"{'peak MiB':>9} {'mem ours/PML':>12} {'|ours-PML|/PML':>15}"
    )
    print(header)
    print("-" * len(header))
    for size, medians, memory, differences in rows:
        for method in METHODS:
            what = method.split()[-1]
            speedup = mem_ratio = equal = ""
            if method.startswith("ours"):
                speedup = f"{medians['pml ' + what] / medians[method]:.1f}"
                mem_ratio = f"{memory[method] / max(memory['pml ' + what], 1e-9):.3f}"
                equal = f"{differences[what]:.1e}" if what in differences else "differs"
            floor = medians[method] / medians["floor"]
            print(
                f"{size:>5} {method:<14} {medians[method] * 1e3:>10.1f} {speedup:>9} "
                f"{floor:>8.1f} {memory[method]:>9.1f} {mem_ratio:>12} {equal:>15}"
            )
    size, medians, memory, _ = rows[-1]
    if size == 1800:
        print(
            f"targets at B = 1800: all {medians['pml all'] / medians['ours all']:.0f}x faster "
            f"than PML (>= 20), memory {memory['ours all'] / memory['pml all']:.3f} of PML's "
            f"(<= 0.1); hard {medians['pml hard'] / medians['ours hard']:.1f}x faster than PML "
            f"(>= 3), {medians['ours hard'] / medians['floor']:.1f}x the floor (<= 4)"
        )


if __name__ == "__main__":
    main()
