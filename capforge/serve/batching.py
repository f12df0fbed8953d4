"""Micro-batching: requests that arrive together share one onnxruntime call.

Whatever queued up while the model was busy forms the next batch (at most ``max_batch``
images), run in a worker thread so the event loop keeps reading requests meanwhile; with
``wait_ms`` > 0 a lone request also waits that long for company. With ``wait_ms`` = 0, a
request that finds the model idle and nobody else arriving is answered inline on the event
loop: handing one image to a thread and back cost about a millisecond here (two thread
wake-ups), more than a captcha model call itself.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import numpy as np


class MicroBatcher:
    """Collects single inputs into batches for ``run`` (batch -> outputs)."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, wait_ms: float,
                 observe: Callable[[int], None] | None = None) -> None:
        self.run, self.max_batch, self.wait = run, max_batch, wait_ms / 1000.0
        self.observe = observe
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] | None = None
        self.task: asyncio.Task | None = None
        self.arriving = 0  # submitters between their arrival and their choice of path
        self.busy = False  # a batch is running in the worker thread

    async def submit(self, item: np.ndarray) -> np.ndarray:
        """The model output for one preprocessed input."""
        if self.wait <= 0:
            self.arriving += 1
            await asyncio.sleep(0)  # requests that came in together reach this point too
            self.arriving -= 1
            if not self.busy and self.arriving == 0 and (self.queue is None or self.queue.empty()):
                return self._run_inline(item)
        if self.task is None or self.task.done():
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))  # type: ignore[union-attr]
        return await future

    def _run_inline(self, item: np.ndarray) -> np.ndarray:
        """One model call on the event loop (which nothing else can use meanwhile)."""
        if self.observe:
            self.observe(1)
        return self.run(item[None])[0]

    async def _next_batch(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The first queued item and whatever joins it (within ``wait`` seconds, if set)."""
        assert self.queue is not None
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
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if self.observe:
                self.observe(len(batch))
            self.busy = True
            try:
                outputs = await asyncio.to_thread(self.run, np.stack([item for item, _ in batch]))
            except Exception as exc:  # hand the failure to every waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self.busy = False
            for (_, future), output in zip(batch, outputs):
                if not future.done():
                    future.set_result(output)
