"""MicroBatcher: a lone request is answered inline, requests arriving together share a call."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from capforge.serve.batching import MicroBatcher


class Recorder:
    """A 'model' that doubles its input and records each call's batch size and thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append((len(batch), threading.get_ident()))
        return batch * 2


def test_a_lone_request_runs_inline_on_the_event_loop() -> None:
    model = Recorder()

    async def lone() -> tuple[np.ndarray, int]:
        batcher = MicroBatcher(model, max_batch=8, wait_ms=0)
        return await batcher.submit(np.array([1.0, 2.0])), threading.get_ident()

    output, loop_thread = asyncio.run(lone())
    assert output.tolist() == [2.0, 4.0]
    assert model.calls == [(1, loop_thread)]


def test_requests_arriving_together_share_calls_in_a_worker_thread() -> None:
    model = Recorder()

    async def together() -> tuple[list[np.ndarray], int]:
        batcher = MicroBatcher(model, max_batch=4, wait_ms=0)
        items = [np.array([float(i)]) for i in range(10)]
        return await asyncio.gather(*(batcher.submit(item) for item in items)), threading.get_ident()

    outputs, loop_thread = asyncio.run(together())
    assert [o.tolist() for o in outputs] == [[2.0 * i] for i in range(10)]
    sizes = [size for size, _ in model.calls]
    assert sum(sizes) == 10 and max(sizes) == 4 and len(sizes) < 10
    assert all(thread != loop_thread for _, thread in model.calls)


def test_a_failing_model_fails_every_waiting_request_and_the_next_call_works() -> None:
    calls = []

    def flaky(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("model broke")
        return batch

    async def run() -> tuple[list[object], np.ndarray]:
        batcher = MicroBatcher(flaky, max_batch=8, wait_ms=0)
        failed = await asyncio.gather(*(batcher.submit(np.zeros(1)) for _ in range(3)), return_exceptions=True)
        return failed, await batcher.submit(np.ones(1))

    failed, after = asyncio.run(run())
    assert all(isinstance(f, RuntimeError) and str(f) == "model broke" for f in failed)
    assert after.tolist() == [1.0]
