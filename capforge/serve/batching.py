"""Micro-batching: requests that arrive together share one onnxruntime call.

Whatever queued up while the model was busy forms the next batch (at most ``max_batch``
images); with ``wait_ms`` > 0 a lone request also waits that long for company.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import numpy as np


class MicroBatcher:
    """Collects single inputs into batches for ``run`` (batch -> outputs), in a worker thread."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, wait_ms: float,
                 observe: Callable[[int], None] | None = None) -> None:
        self.run, self.max_batch, self.wait = run, max_batch, wait_ms / 1000.0
        self.observe = observe
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] | None = None
        self.task: asyncio.Task | None = None

    async def submit(self, item: np.ndarray) -> np.ndarray:
        """The model output for one preprocessed input."""
        if self.task is None or self.task.done():
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))  # type: ignore[union-attr]
        return await future

    async def _loop(self) -> None:
        assert self.queue is not None
        while True:
            batch = [await self.queue.get()]
            deadline = asyncio.get_running_loop().time() + self.wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    if self.wait <= 0:
                        break
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            if self.observe:
                self.observe(len(batch))
            try:
                outputs = await asyncio.to_thread(self.run, np.stack([item for item, _ in batch]))
            except Exception as exc:  # hand the failure to every waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), output in zip(batch, outputs):
                if not future.done():
                    future.set_result(output)
