"""Time the service spends on the event loop reading a JSON upload, with and without the photo cut.

``tripletface.service.uploads.read_body`` cuts a JSON body's base64 photo out by byte searches and
parses only the few fields left; a body whose other fields hold an escape (here ``"\\u0041"``)
cannot be cut safely and is parsed whole by ``json.loads``, the way it would be without the cut.
Both bodies have the same photo and size; each line is the median of interleaved runs (the
event loop holds the GIL meanwhile, so every millisecond here delays every other request).

    python bench/json_upload.py [--sizes 0.1 1 5] [--runs 15]
"""

import argparse
import asyncio
import base64
import os
import statistics
import time

from tripletface.service.uploads import read_body

LIMIT = 64 * 2**20


def body(photo: str, escaped: bool) -> bytes:
    """A JSON upload of the base64 text ``photo`` and two short fields."""
    name = "\\u0041da" if escaped else "Ada"
    return f'{{"name": "{name}", "image": "{photo}", "top": 3}}'.encode()


async def _chunks(raw: bytes, size: int = 2**16):
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


async def read_seconds(raw: bytes) -> float:
    """Seconds read_body takes on the body, streamed in 64 KiB chunks."""
    start = time.perf_counter()
    result = await read_body("application/json", str(len(raw)), _chunks(raw), LIMIT)
    elapsed = time.perf_counter() - start
    assert result.fields["name"] == "Ada" and len(result.image) > 0
    return elapsed


async def measure(raws: dict[str, bytes], runs: int) -> dict[str, float]:
    """Median milliseconds of each body over ``runs`` interleaved reads."""
    times: dict[str, list[float]] = {kind: [] for kind in raws}
    for _ in range(runs):
        for kind, raw in raws.items():
            times[kind].append(await read_seconds(raw))
    return {kind: 1000 * statistics.median(values) for kind, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.1, 1.0, 5.0], help="MB")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; one thread")
    print(f"{'photo':>8} {'cut (ms)':>10} {'whole parse (ms)':>17} {'ratio':>7}")
    for size in args.sizes:
        photo = base64.b64encode(os.urandom(int(size * 2**20))).decode("ascii")
        raws = {kind: body(photo, kind == "whole") for kind in ("cut", "whole")}
        medians = asyncio.run(measure(raws, args.runs))
        cut, whole = medians["cut"], medians["whole"]
        print(f"{size:>6g}MB {cut:>10.2f} {whole:>17.2f} {whole / cut:>6.1f}x")


if __name__ == "__main__":
    main()
