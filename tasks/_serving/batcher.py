"""Adaptive micro-batching of concurrent ``/predict`` requests, scored off the event loop and journaled."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class _Pending:
    __slots__ = ("records", "ids", "arrived", "future")

    def __init__(self, records: list[dict[str, Any]], ids: list[str], arrived: float, future: Any) -> None:
        self.records = records
        self.ids = ids
        self.arrived = arrived
        self.future = future


class MicroBatcher:
    """Adaptive batching of concurrent requests into one ``predict`` call, scored off the event loop.

    A request joins the queue; the batcher takes every queued request (up to ``max_batch_size``
    records) and scores them together in one worker thread (so a slow model never stalls the event
    loop: health checks and request parsing go on). Before a batch it waits up to ``wait_ms`` for the
    clients of the batch that just finished (they are usually about to send again), so under steady
    concurrency all clients share one batch instead of splitting into groups that take turns
    (which halves throughput); a lone client is scored at once. A batch that fails is retried
    request by request, so one request's bad value never fails its neighbours.

    Why batch at all (measured with ``benchmarks/bench_serving.py --models lr --connections 8 --skip-mlflow
    --variants journal,no-batching``; ``no-batching`` sets ``max_batch_size=1``): one ``predict`` on a
    one-row frame costs about as much as on 16 rows (the pipeline's per-call overhead dominates), so
    the batched endpoint serves several times the requests per second of the unbatched one.

    The results of a batch are written to the inference log's journal (one ``write()``) in the
    worker thread before any of its requests is answered.

    Args:
        predictor: A :class:`Predictor` (or any callable with ``predict(frame) -> (predictions, scores, proba)``).
        features: Column order of the frame.
        max_batch_size: Most records per ``predict`` call.
        wait_ms: Longest wait for a batch to fill (0: never wait).
        writer: The inference log writer (or None): journal ``encode``/``append``, or in-memory ``log``.
        in_thread: Score in a worker thread (False: in the event loop).
    """

    def __init__(self, predictor: Any, features: list[str], max_batch_size: int, wait_ms: float,
                 writer: Any = None, in_thread: bool = True) -> None:
        self.predictor = predictor
        self.features = features
        self.max_batch_size = max(1, int(max_batch_size))
        self.wait_s = max(0.0, float(wait_ms)) / 1000.0
        self.writer = writer
        self.in_thread = in_thread
        self.batches = 0
        self.records = 0
        self.scoring = 0  # records of the batch being scored now
        self._queue: deque[_Pending] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._last = 0  # requests in the batch that finished last
        self._executor: Any = None

    async def submit(self, records: list[dict[str, Any]], ids: list[str], arrived: float) -> tuple[Any, Any, Any]:
        """Queue records and wait for their ``(predictions, scores, probabilities)``."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())
        item = _Pending(records, ids, arrived, loop.create_future())
        self._queue.append(item)
        assert self._wake is not None
        self._wake.set()
        return await item.future

    async def _run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None
        if self.in_thread and self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="mlops-predict")
        while True:
            if self._queue:
                others = len(self._queue)  # they waited while the last batch ran: other clients
            else:
                await wake.wait()
                wake.clear()
                others = 0  # whoever comes now is a client of the last batch, coming back
            # The clients of the last batch are about to send again: wait (briefly) for them too, so
            # that concurrent clients share one batch instead of splitting into groups taking turns.
            target = min(others + self._last, self.max_batch_size)
            if self.wait_s and len(self._queue) < target:
                deadline = loop.time() + self.wait_s
                while len(self._queue) < target and (left := deadline - loop.time()) > 0:
                    timer = loop.call_later(left, wake.set)
                    await wake.wait()
                    wake.clear()
                    timer.cancel()
            batch = [self._queue.popleft()]
            size = len(batch[0].records)
            while self._queue and size + len(self._queue[0].records) <= self.max_batch_size:
                item = self._queue.popleft()
                batch.append(item)
                size += len(item.records)
            self._last = len(batch)
            self.scoring = size
            try:
                if self._executor is not None:
                    results = await loop.run_in_executor(self._executor, self._execute, batch)
                else:
                    results = self._execute(batch)
            except Exception as exc:  # noqa: BLE001 - never leave a request waiting forever
                results = [exc] * len(batch)
            self.scoring = 0
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
            for _ in range(3):  # let the event loop read and queue the requests that arrived meanwhile
                await asyncio.sleep(0)

    def _execute(self, batch: list[_Pending]) -> list[Any]:
        """Score a batch and log it; return per request ``(predictions, scores, probabilities)`` or its error."""
        import pandas as pd

        records = batch[0].records if len(batch) == 1 else [r for item in batch for r in item.records]
        try:
            frame = pd.DataFrame.from_records(records, columns=self.features)
            predictions, scores, proba = self.predictor.predict(frame)
            probabilities = self.predictor.probabilities(proba)
        except Exception as exc:  # noqa: BLE001 - isolate the request that broke the batch
            if len(batch) > 1:
                return [result for item in batch for result in self._execute([item])]
            return [exc]
        self.batches += 1
        self.records += len(records)
        results: list[Any] = []
        offset = 0
        for item in batch:
            k = len(item.records)
            results.append((predictions[offset:offset + k], None if scores is None else scores[offset:offset + k],
                            None if probabilities is None else probabilities[offset:offset + k]))
            offset += k
        if self.writer is not None:
            self._log(batch, results)
        return results

    def _log(self, batch: list[_Pending], results: list[Any]) -> None:
        """Journal every answered request before it is answered; a request that cannot be logged is refused."""
        writer = self.writer
        if not writer.journal:
            for item, (predictions, scores, probabilities) in zip(batch, results, strict=True):
                writer.log(item.ids, [item.arrived] * len(item.ids), item.records, predictions, scores, probabilities)
            return
        blobs, count = [], 0
        for k, (item, result) in enumerate(zip(batch, results, strict=True)):
            try:
                blobs.append(writer.encode(item.ids, [item.arrived] * len(item.ids), item.records, *result))
                count += len(item.ids)
            except Exception as exc:  # noqa: BLE001 - RecordError: refuse this request only
                results[k] = exc
        if not blobs:
            return
        try:
            writer.append(b"".join(blobs), count)
        except Exception as exc:  # noqa: BLE001 - JournalError: none of them may be acknowledged
            for k, result in enumerate(results):
                if not isinstance(result, BaseException):
                    results[k] = exc

    def close(self) -> None:
        """Stop the worker thread (after the batch it runs)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
