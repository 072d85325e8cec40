"""One encoder pass for the chips of concurrent requests: a queue, a short wait, a batch.

An encoder embeds a batch of 16 chips in much less than 16 times the time of one (bench
encoder_speed: 2.4 ms a face in batches of 64, 11x fewer faces a second one at a time), so
requests arriving together are served together. The pass runs on a thread of its own (torch
releases the GIL), so the event loop keeps accepting requests meanwhile; those queue up and form
the next batch.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class EncoderBatcher:
    """``await embed(chips)`` from many requests; ``run()`` serves them in batches.

    ``encode`` maps N x S x S x 3 uint8 chips to N x D embeddings. A batch starts with the first
    waiting request and takes whatever else arrives within ``wait`` seconds, up to ``max_faces``
    chips; ``on_batch`` is told the size of each pass.
    """

    def __init__(
        self,
        encode: Callable[[np.ndarray], np.ndarray],
        wait: float = 0.004,
        max_faces: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.encode = encode
        self.wait = wait
        self.max_faces = max_faces
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tripletface-encoder")

    async def embed(self, chips: np.ndarray) -> np.ndarray:
        """N x D embeddings of N >= 1 chips, computed in a batch with other requests' chips."""
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((chips, future))
        return await future

    async def run(self) -> None:
        """Serve the queue until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            await self._gather(batch, loop.time() + self.wait)
            batch = [(chips, future) for chips, future in batch if not future.cancelled()]
            if not batch:
                continue
            chips = [item[0] for item in batch]
            if self.on_batch is not None:
                self.on_batch(sum(map(len, chips)))
            try:
                embeddings = await loop.run_in_executor(
                    self._thread, self.encode, np.concatenate(chips)
                )
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            parts = np.split(embeddings, np.cumsum([len(c) for c in chips])[:-1])
            for (_, future), part in zip(batch, parts, strict=True):
                if not future.done():
                    future.set_result(part)

    async def _gather(self, batch: list, deadline: float) -> None:
        """Add waiting requests to ``batch`` until ``deadline`` or ``max_faces`` chips."""
        loop = asyncio.get_running_loop()
        faces = len(batch[0][0])
        while faces < self.max_faces:
            if self._queue.empty():
                left = deadline - loop.time()
                if left <= 0:
                    return
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    return
            else:
                item = self._queue.get_nowait()
            batch.append(item)
            faces += len(item[0])

    def close(self) -> None:
        """Stop the encoder thread once its current pass is done."""
        self._thread.shutdown(wait=True)
