"""Shadow scoring: a registered challenger predicts every logged request too, off the answer's path.

The champion answers; the request is logged as always; then its validated records are queued here and the shadow
model scores them later, in batches, on the event loop between requests: it gathers requests for `GATHER_S` (or
until a chunk is full), so one encoding and one booster call serve many, then scores a chunk of at most `CHUNK_ROWS`
rows at a time, so no request waits behind more than one chunk. Its predictions go to the shadow log
(`requests/<name>/shadow/`, the request log's format without the features), joined to the labels by request id and
record. The queue is bounded (`feedback.shadow.queue_rows`): past it, requests are not shadow-scored and counted as
dropped, so a slow challenger never holds memory or the champion's answers.

With `feedback.shadow.canary_share` above 0, that share of requests is answered by the challenger instead; the
champion then scores those in shadow, so both models' predictions exist for every logged request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from mlcycle.schemas.config import RequestLogConfig, ShadowConfig
from mlcycle.tasks.monitor.feedback import shadow_dir
from mlcycle.tasks.monitor.request_log import RequestLog
from mlcycle.tasks.preprocess import encode_records
from mlcycle.tasks.registry.bundle import ModelBundle

log = logging.getLogger("mlcycle.serving")
CHUNK_ROWS = 128  # rows scored between two turns of the event loop: about a millisecond of work
GATHER_S = 0.05  # a batch waits this long for more requests: per-call costs shared, the shadow's answers 50 ms later


class Predictor(Protocol):
    """What the shadow needs of the service's loaded model (serving.service.Predictor)."""

    bundle: ModelBundle

    @property
    def tag(self) -> str: ...

    def predict(self, features: np.ndarray) -> np.ndarray: ...

    def logged(self, raw: np.ndarray) -> tuple[list[float], list[str] | None]: ...


def shadow_refusal(champion: Predictor, challenger: Predictor) -> str | None:
    """Why `challenger` cannot be scored on the records `champion` validated (None: it can)."""
    mine, theirs = champion.bundle.config, challenger.bundle.config
    if challenger.bundle.config.name != mine.name:
        return f"{challenger.tag} is a model of {theirs.name}, not {mine.name}"
    if (theirs.features_schema_ref, theirs.task, challenger.bundle.classes) != (
        mine.features_schema_ref, mine.task, champion.bundle.classes
    ):  # fmt: skip
        return f"{challenger.tag} takes other requests or answers otherwise than {champion.tag}"
    return None


class ShadowScorer:
    """The challenger in shadow, its queue and its log; `run` is the background task that scores."""

    def __init__(self, challenger: Predictor, champion: Callable[[], Predictor], settings: ShadowConfig,
                 log_settings: RequestLogConfig, counter: Any = None, seed: int | None = None) -> None:  # fmt: skip
        self.challenger = challenger
        self.champion = champion  # the service's current champion (it may change while this shadow runs)
        self.settings = settings
        self.log = RequestLog(challenger.bundle.config.name, {}, log_settings,
                              root=shadow_dir(challenger.bundle.config.name), index=False)  # fmt: skip
        self._queue: deque[tuple[list[dict[str, Any]], str, Predictor, datetime]] = deque()
        self._queued_rows = 0
        self._wake = asyncio.Event()
        self._random = random.Random(seed)
        self.scored = 0
        self.dropped = 0
        self.counter = counter  # a Prometheus counter labelled by model and outcome (scored, dropped), if any
        self.task: asyncio.Task[None] | None = None  # `run`, started by the service
        self._written_at = 0.0  # loop time of the last write of the shadow log

    @property
    def tag(self) -> str:
        return self.challenger.tag

    def answering(self, champion: Predictor) -> Predictor:
        """Who answers this request: the champion, or with `canary_share` the challenger."""
        share = self.settings.canary_share
        return self.challenger if share > 0 and self._random.random() < share else champion

    def submit(self, rows: list[dict[str, Any]], request_id: str, answered_by: Predictor) -> bool:
        """Queue a logged request for the model that did not answer it (O(1)); False when the queue is full."""
        if self._queued_rows + len(rows) > self.settings.queue_rows:
            self.dropped += len(rows)
            self._count(self.tag, "dropped", len(rows))
            return False
        other = self.champion() if answered_by.tag == self.challenger.tag else self.challenger
        self._queue.append((rows, request_id, other, datetime.now(UTC)))
        self._queued_rows += len(rows)
        self._wake.set()
        return True

    async def run(self) -> None:
        """Score what is queued, a chunk at a time, yielding to requests between chunks; write the log when it is
        due (`flush_rows`) or `flush_s` after its oldest unwritten row, as the request log is written."""
        loop = asyncio.get_running_loop()
        every = self.log.config.flush_s
        while True:
            with contextlib.suppress(TimeoutError):  # no request for a while: look at the log's age anyway
                await asyncio.wait_for(self._wake.wait(), timeout=every)
            self._wake.clear()
            if self._queue and self._queued_rows < CHUNK_ROWS:
                await asyncio.sleep(GATHER_S)
            due = False
            while self._queue:
                due = self.score_chunk() or due
                await asyncio.sleep(0)  # requests waiting on the loop go first
            if due or (self.log.buffered and loop.time() - self._written_at >= every):
                self._written_at = loop.time()
                loop.run_in_executor(None, self.log.flush)

    def score_chunk(self) -> bool:
        """Score queued requests, up to about `CHUNK_ROWS` rows, grouped by model; True when the log is due."""
        taken: list[tuple[list[dict[str, Any]], str, Predictor, datetime]] = []
        rows = 0
        while self._queue and (not taken or rows + len(self._queue[0][0]) <= CHUNK_ROWS):
            item = self._queue.popleft()
            taken.append(item)
            rows += len(item[0])
        self._queued_rows -= rows
        due = False
        for model in {id(item[2]): item[2] for item in taken}.values():
            mine = [item for item in taken if item[2] is model]
            records = [r for item in mine for r in item[0]]
            features, _ = encode_records(model.bundle.preprocessor, records)
            predictions, labels = model.logged(model.predict(features))
            start = 0
            for request_rows, request_id, _, at in mine:
                end = start + len(request_rows)
                due = self.log.add(request_rows, model.tag, request_id, predictions[start:end],
                                   labels[start:end] if labels is not None else None, at) or due  # fmt: skip
                start = end
            self.scored += len(records)
            self._count(model.tag, "scored", len(records))
        return due

    async def drain(self) -> None:
        """Score what is left and write the log (at shutdown, or before the shadow changes)."""
        while self._queue:
            self.score_chunk()
        await asyncio.to_thread(self.log.flush)

    def _count(self, model: str, outcome: str, rows: int) -> None:
        if self.counter is not None:
            self.counter.labels(model=model, outcome=outcome).inc(rows)
