"""Dynamic batching over a pool of worker threads, one model runner (interpreter set) per thread.

The event loop owns the queue (bounded: ``max_queue`` requests, then 429 at once); workers only run batches. A
request is dispatched as soon as a worker is free. It waits for others to join (at most ``max_wait_s`` after it
was queued, and only until the batch is full) only while other requests are still arriving; a lone request never
waits. Under load, requests queue while all workers are busy, so batches form without any waiting.

Each worker writes its batch's rows into the interpreter's input tensors (quantizing on the way), invokes,
dequantizes and splits the result by request; the interpreter releases the GIL while it runs, so workers run in
parallel with the event loop. Each worker's runner meters the CPU time spent inside ``invoke()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .. import numerics
from .errors import ClientClosed, TooManyRequests, Unavailable
from .metrics import Metrics
from .model import Runner, ServedModel
from .tensors import Array

log = logging.getLogger("modelship.serve.batching")

Result = dict[str, Array]

#: nice increment for worker threads (Linux, per thread), so compute yields CPU to the event loop's I/O.
#: Off by default: inside a container's cgroup it only ranks the server's own threads, but on a shared host
#: it also ranks the workers below every other process, which measured worse on a busy machine.
WORKER_NICE = int(os.environ.get("MODELSHIP_WORKER_NICE", "0"))
Callback = Callable[[Result | None, BaseException | None], None]

#: a model whose single row runs within this (measured at warm-up) runs a lone request on the event loop thread
#: even while large bodies are being received (see ``Batcher._alone``): the digits CNN (~0.2 ms) does,
#: MobileNetV2 (~3-4 ms) does not
INLINE_RECEIVING_MAX_S = 0.0005


class Job:
    """One request's inputs (in request dtypes), waiting for a batch."""

    __slots__ = ("callback", "dispatched", "done", "enqueued", "inputs", "key", "on_release", "request", "rows")

    def __init__(
        self,
        inputs: Mapping[str, Array],
        rows: int,
        callback: Callback,
        request: Any = None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.inputs = inputs
        self.request = request  # anything with a ``closed`` flag: a gone client's job is skipped
        self.rows = rows
        self.callback = callback
        # requests batch together only when their non-batch dimensions agree
        self.key = tuple(a.shape[1:] for a in inputs.values())
        self.enqueued = 0.0  # queued (time.monotonic)
        self.dispatched = 0.0  # taken into a batch for a worker (time.monotonic; 0: not yet)
        self.done = False  # answered (result, error or timeout); a done job is skipped
        #: called once on the loop thread when the batcher no longer touches the inputs (run, skipped or failed)
        self.on_release = on_release

    def release(self) -> None:
        hook, self.on_release = self.on_release, None
        if hook is not None:
            hook()


class _Worker:
    __slots__ = ("index", "queue", "runner", "thread")

    def __init__(self, index: int) -> None:
        self.index = index
        self.runner: Runner | None = None
        self.queue: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None


class Batcher:
    def __init__(
        self,
        model: ServedModel,
        *,
        workers: int,
        threads: int,
        max_batch_size: int,
        max_wait_s: float,
        metrics: Metrics | None = None,
        arriving: Callable[[], int] = lambda: 0,
        receiving: Callable[[], int] = lambda: 0,
        inline_max_s: float = 0.05,
        inline_receiving_max_s: float = INLINE_RECEIVING_MAX_S,
        max_queue: int = 512,
    ) -> None:
        self.model = model
        self.max_queue = max(1, max_queue)
        self.workers = max(1, workers)
        self.threads = max(1, threads)
        self.max_batch_size = max(1, max_batch_size) if model.batchable else 1
        self.max_wait_s = max(0.0, max_wait_s)
        self._arriving = arriving
        self._receiving = receiving
        self._inline_max_s = inline_max_s
        self._inline_receiving_max_s = inline_receiving_max_s
        self._inline = False  # decided after warmup: single-row runs are short enough
        self._inline_receiving = False  # ... and so short that receiving a body may wait for one
        self._single_row_s: float | None = None  # the slowest worker's single-row run, measured at warm-up
        self.inline_runs = 0
        self._pending: deque[Job] = deque()
        self._pending_rows = 0
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._busy = 0
        self._large_busy = 0  # workers running a large batch (one job of more rows than max_batch_size)
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._metrics = metrics
        self._batch_hist: Any = None
        self._batch_req_hist: Any = None
        self._infer_hist: Any = None
        self._wait_hist: Any = None
        if metrics is not None:
            self._batch_hist = metrics.batch_size.labels(model.name)
            self._batch_req_hist = metrics.batch_requests.labels(model.name)
            self._infer_hist = metrics.inference.labels(model.name)
            self._wait_hist = metrics.queue_wait.labels(model.name)
            metrics.queue_depth.labels(model.name).set_function(lambda: len(self._pending))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the workers; each builds its runner and warms it up. Returns when all are ready."""
        self._loop = asyncio.get_running_loop()
        futures: list[concurrent.futures.Future[None]] = []
        for i in range(self.workers):
            w = _Worker(i)
            fut: concurrent.futures.Future[None] = concurrent.futures.Future()
            w.thread = threading.Thread(
                target=self._worker_main, args=(w, fut), name=f"modelship-worker-{i}", daemon=True
            )
            self._all.append(w)
            futures.append(fut)
            w.thread.start()
        try:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except BaseException:
            await self.stop()
            raise
        self._idle = list(reversed(self._all))
        slowest = self.single_row_seconds
        self._inline = slowest is not None and slowest <= self._inline_max_s
        self._single_row_s = slowest
        self._inline_receiving = slowest is not None and slowest <= self._inline_receiving_limit_s

    async def stop(self) -> None:
        """Fail queued jobs, stop the workers after their current batch and join them."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            job = self._pending.popleft()
            if not job.done:
                job.done = True
                job.callback(None, Unavailable("server is shutting down"))
            job.release()
        self._pending_rows = 0
        for w in self._all:
            w.queue.put(None)
        threads = [w.thread for w in self._all if w.thread is not None]
        if threads:

            def join() -> None:
                for t in threads:
                    t.join()

            await asyncio.to_thread(join)

    # ------------------------------------------------------------------ loop side

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.max_queue

    def full_error(self) -> TooManyRequests:
        return TooManyRequests(
            f"model '{self.model.name}' has {len(self._pending)} requests waiting (limit {self.max_queue}); retry"
        )

    def meters(self) -> list[numerics.InvokeMeter]:
        """The workers' invoke meters (read from any thread; each is written by its worker only)."""
        return [w.runner.meter for w in self._all if w.runner is not None and w.runner.meter is not None]

    @property
    def single_row_seconds(self) -> float | None:
        """The slowest worker's single-row run at warm-up (None before, or if a runner did not measure it)."""
        probes = [w.runner.single_row_seconds for w in self._all if w.runner is not None]
        measured = [p for p in probes if p is not None]
        return max(measured) if measured and len(measured) == len(probes) else None

    @property
    def _inline_receiving_limit_s(self) -> float:
        """The longest run (estimated) that may hold the loop thread while a body is being received."""
        return min(self._inline_max_s, self._inline_receiving_max_s)

    @property
    def inline_policy(self) -> str:
        """When a lone request runs on the event loop thread: "never", "when idle" (nothing running, queued or
        being received) or "when idle or receiving" (large bodies being received do not stop it)."""
        return "when idle or receiving" if self._inline_receiving else "when idle" if self._inline else "never"

    @property
    def busy_workers(self) -> int:
        return self._busy

    def submit(self, job: Job) -> None:
        """Queue a job (event loop thread only). Its callback runs on the loop thread exactly once.

        Raises TooManyRequests (and never calls the callback) when ``max_queue`` requests already wait.
        """
        if self._closed:
            job.done = True
            job.callback(None, Unavailable("server is shutting down"))
            job.release()
            return
        if len(self._pending) >= self.max_queue:
            raise self.full_error()
        job.enqueued = time.monotonic()
        self._pending.append(job)
        self._pending_rows += job.rows
        if self._idle:
            self._dispatch(False)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch(True)

    def _large(self, job: Job) -> bool:
        """A job of more rows than a batch holds: it runs alone, and long."""
        return job.rows > self.max_batch_size

    def _small_first(self) -> bool:
        """All workers but one run large batches and a large job heads the queue: move the first small job
        waiting behind it to the front (True), so the last worker serves small requests and a few large
        requests cannot make every small one wait for them. False when no small job waits."""
        pending = self._pending
        for i, job in enumerate(pending):
            if not self._large(job) and not job.done:
                del pending[i]
                pending.appendleft(job)
                return True
        return False

    def _dispatch(self, deadline_passed: bool) -> None:
        pending = self._pending
        while self._idle and pending:
            head = pending[0]
            if head.done or self._abandoned(head):
                pending.popleft()
                self._pending_rows -= head.rows
                head.release()
                continue
            if self._large(head) and self.workers > 1 and self._large_busy >= self.workers - 1:
                if not self._small_first():
                    break  # the last worker waits for a small request (or for a large batch to end)
                continue
            if (
                not deadline_passed
                and self.max_wait_s > 0
                and self._pending_rows < self.max_batch_size
                and self._arriving() > 0
            ):
                deadline = head.enqueued + self.max_wait_s
                if time.monotonic() < deadline:
                    if self._timer is None and self._loop is not None:
                        delay = deadline - time.monotonic()
                        self._timer = self._loop.call_later(max(0.0, delay), self._on_timer)
                    return
            deadline_passed = False
            batch = self._take()
            if not batch:
                continue
            now = time.monotonic()
            for job in batch:
                job.dispatched = now
                if self._wait_hist is not None:
                    self._wait_hist.observe(now - job.enqueued)
            worker = self._idle.pop()
            self._busy += 1
            large = self._large(batch[0])
            if large:
                self._large_busy += 1
            elif worker.runner is not None and self._alone(batch):
                # Nothing else to do: run on this thread with the idle worker's runner (that worker only
                # touches it when given a batch), saving two thread wake-ups on the latency path. Never a large
                # batch: it would hold the event loop (every connection, every health check) while it runs.
                self.inline_runs += 1
                results, err = self._execute(worker.runner, batch)
                self._complete(worker, batch, results, err)
                return
            worker.queue.put(batch)
        if not pending and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _alone(self, batch: list[Job]) -> bool:
        """The batch just taken may run on the loop thread: fast enough, nothing else running or queued, and no
        other request's body being received, large ones included (``arriving`` counts small ones only): the loop
        would stop reading it, and under load with large bodies every request would find the others unread and
        run here, one at a time, with the workers idle. A model whose single row runs in at most
        ``inline_receiving_max_s`` runs here even while large bodies are being received: reading them waits less
        than handing the run to a worker and back costs, and on a CPU shared with other processes (slow uploads
        and floods from the same machine) every thread wake-up is a wait for a CPU. That holds for the batch's
        rows together: a batch of many rows (up to ``max_batch_size``) whose estimated run (rows x the single
        row's) exceeds that bound goes to a worker while a body is being received."""
        if not (self._inline and self._busy == 1 and not self._pending and not self._arriving()):
            return False
        if not self._receiving():
            return True
        if not self._inline_receiving or self._single_row_s is None:
            return False
        rows = sum(j.rows for j in batch)
        return rows == 1 or rows * self._single_row_s <= self._inline_receiving_limit_s

    @staticmethod
    def _abandoned(job: Job) -> bool:
        """The client of a queued job went away: answer it (the answer is dropped) and skip the work."""
        if job.request is None or not getattr(job.request, "closed", False):
            return False
        job.done = True
        job.callback(None, ClientClosed("client closed the connection"))
        return True

    def _take(self) -> list[Job]:
        pending = self._pending
        head = pending.popleft()
        self._pending_rows -= head.rows
        batch = [head]
        rows = head.rows
        if rows >= self.max_batch_size:
            return batch
        skipped: list[Job] = []
        while pending and rows < self.max_batch_size and len(skipped) < 64:
            job = pending[0]
            if job.done or self._abandoned(job):
                pending.popleft()
                self._pending_rows -= job.rows
                job.release()
                continue
            if job.key != head.key:
                skipped.append(pending.popleft())
                continue
            if rows + job.rows > self.max_batch_size:
                break
            pending.popleft()
            self._pending_rows -= job.rows
            batch.append(job)
            rows += job.rows
        if skipped:
            pending.extendleft(reversed(skipped))
        return batch

    def _complete(
        self, worker: _Worker, batch: list[Job], results: list[Result] | None, err: BaseException | None
    ) -> None:
        self._busy -= 1
        if self._large(batch[0]):
            self._large_busy -= 1
        if not self._closed:
            self._idle.append(worker)
        now = time.monotonic()
        for i, job in enumerate(batch):
            job.release()
            if job.done:
                continue
            job.done = True
            timing = getattr(job.request, "timing", None)  # the client asked for Server-Timing
            if timing is not None:
                timing += [("queue", job.dispatched - job.enqueued), ("run", now - job.dispatched)]
            try:
                job.callback(results[i] if results is not None else None, err)
            except Exception:
                log.exception("response callback failed", extra={"model": self.model.name})
        if self._pending and not self._closed:
            self._dispatch(False)

    # ------------------------------------------------------------------ worker side

    def _worker_main(self, worker: _Worker, ready: concurrent.futures.Future[None]) -> None:
        if WORKER_NICE:
            # Compute yields to I/O: the event loop keeps reading requests and writing answers on a saturated
            # CPU, so uploads are not starved while batches run (workers still take all the CPU left over).
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
        try:
            runner = self.model.create_runner(self.threads, self.max_batch_size)
            runner.warmup()
        except BaseException as e:
            log.exception("worker failed to start", extra={"model": self.model.name, "worker": worker.index})
            ready.set_exception(e)
            return
        worker.runner = runner
        ready.set_result(None)
        loop = self._loop
        assert loop is not None
        get = worker.queue.get
        while True:
            batch = get()
            if batch is None:
                return
            results, err = self._execute(runner, batch)
            try:
                loop.call_soon_threadsafe(self._complete, worker, batch, results, err)
            except RuntimeError:  # loop closed during a forced shutdown
                return

    def _execute(self, runner: Runner, batch: list[Job]) -> tuple[list[Result] | None, BaseException | None]:
        """Fill, run, dequantize and split one batch (on whichever thread owns ``runner``)."""
        model = self.model
        results: list[Result] | None = None
        err: BaseException | None = None
        t0 = time.perf_counter()
        try:
            out = model.decode_outputs(runner.run_parts(model, [j.inputs for j in batch], [j.rows for j in batch]))
            if len(batch) == 1:
                results = [out]
            else:
                results = []
                offset = 0
                for j in batch:
                    results.append({k: v[offset : offset + j.rows] for k, v in out.items()})
                    offset += j.rows
        except Exception as e:
            log.exception("inference failed", extra={"model": model.name})
            err = e
        if self._infer_hist is not None:
            self._infer_hist.observe(time.perf_counter() - t0)
            self._batch_hist.observe(sum(j.rows for j in batch))
            self._batch_req_hist.observe(len(batch))
        return results, err
