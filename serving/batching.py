"""Adaptive micro-batching of booster calls: records of concurrent requests share one `inplace_predict`.

While one batch runs, new requests queue; the next batch takes everything queued (up to `max_batch_size` rows),
waiting at most `max_latency_ms` for more once the first request has arrived. Requests are never refused for being
slow: under load they wait for the running batch, so load turns into latency, not into errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class _Item:
    rows: np.ndarray
    predict: Predict
    future: asyncio.Future[np.ndarray]


class MicroBatcher:
    def __init__(self, max_batch_size: int, max_latency_ms: float) -> None:
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.rows = 0

    async def predict(self, rows: np.ndarray, predict: Predict) -> np.ndarray:
        """Predict `rows` with `predict`, batched with the rows of other requests for the same predict function."""
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run(self._queue))
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(rows, predict, future))
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    async def _run(self, queue: asyncio.Queue[_Item]) -> None:
        pending: _Item | None = None
        while True:
            first = pending or await queue.get()
            pending = None
            batch, size = [first], len(first.rows)
            deadline = time.monotonic() + self.max_latency_s
            while size < self.max_batch_size:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                # A batch holds one model's rows; a request for another (just reloaded) model starts the next.
                if item.predict != first.predict or size + len(item.rows) > self.max_batch_size:
                    pending = item
                    break
                batch.append(item)
                size += len(item.rows)
            await self._execute(batch)

    async def _execute(self, batch: list[_Item]) -> None:
        try:
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([i.rows for i in batch])
            # A small batch costs less on the event loop than a thread hop; requests keep queueing meanwhile.
            out = batch[0].predict(rows) if len(rows) <= 64 else await asyncio.to_thread(batch[0].predict, rows)
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.batches += 1
        self.rows += len(rows)
        start = 0
        for item in batch:
            end = start + len(item.rows)
            if not item.future.done():
                item.future.set_result(out[start:end])
            start = end
