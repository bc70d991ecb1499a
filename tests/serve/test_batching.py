"""The batcher on its own: coalescing, splitting, waiting policy, failures, shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import numpy as np
import pytest

from modelship.serve.batching import Batcher, Job, Result
from modelship.serve.errors import Unavailable
from modelship.serve.model import Runner, ServedModel
from modelship.serve.tensors import Array, TensorSpec


class EchoModel(ServedModel):
    """out = x * 2 for any non-batch shape; records batch shapes; can block or fail on demand."""

    def __init__(self, single_row_seconds: float | None = None) -> None:
        self.single_row_seconds = single_row_seconds
        self.threads: list[str] = []
        super().__init__(
            "echo", "1", [TensorSpec("x", "FP32", (-1, -1))], [TensorSpec("out", "FP32", (-1, -1))],
            batchable=True, path="-",
        )  # fmt: skip
        self.shapes: list[tuple[int, ...]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False

    def create_runner(self, threads: int, max_batch_size: int) -> Runner:
        model = self

        class R(Runner):
            single_row_seconds = model.single_row_seconds

            def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
                model.threads.append(threading.current_thread().name)
                model.shapes.append(tuple(inputs["x"].shape))
                model.gate.wait(30)
                if model.fail_next:
                    model.fail_next = False
                    raise RuntimeError("boom")
                return {"out": inputs["x"] * 2}

        return R()


def job(x: np.ndarray, fut: asyncio.Future[Result]) -> Job:
    def cb(result: Result | None, err: BaseException | None) -> None:
        if err is not None:
            fut.set_exception(err)
        else:
            assert result is not None
            fut.set_result(result)

    return Job({"x": x}, int(x.shape[0]), cb)


async def run_jobs(b: Batcher, xs: list[np.ndarray]) -> list[asyncio.Future[Result]]:
    loop = asyncio.get_running_loop()
    futs = [loop.create_future() for _ in xs]
    for x, f in zip(xs, futs, strict=True):
        b.submit(job(x, f))
    return futs


def rows(n: int, cols: int, start: int) -> np.ndarray:
    return np.arange(start, start + n * cols, dtype=np.float32).reshape(n, cols)


@pytest.mark.asyncio
async def test_queued_requests_coalesce_and_split_back() -> None:
    m = EchoModel()
    b = Batcher(m, workers=1, threads=1, max_batch_size=8, max_wait_s=0)
    await b.start()
    try:
        m.gate.clear()
        xs = [rows(1, 3, 0), rows(2, 3, 10), rows(3, 3, 20), rows(2, 3, 30), rows(4, 3, 40), rows(1, 3, 50)]
        futs = await run_jobs(b, xs)
        m.gate.set()
        results = await asyncio.wait_for(asyncio.gather(*futs), 10)
        for x, r in zip(xs, results, strict=True):
            np.testing.assert_array_equal(r["out"], x * 2)
        # first job runs alone (worker idle), then 2+3+2 = 7 (the 4-row job does not fit in 8), then 4+1
        assert [s[0] for s in m.shapes] == [1, 7, 5]
    finally:
        await b.stop()


@pytest.mark.asyncio
async def test_a_lone_request_does_not_wait_for_the_batch_timeout() -> None:
    m = EchoModel()
    b = Batcher(m, workers=1, threads=1, max_batch_size=8, max_wait_s=3600, arriving=lambda: 0)
    await b.start()
    try:
        (fut,) = await run_jobs(b, [rows(1, 2, 0)])
        # would take an hour if the batcher waited for company that is not coming
        r = await asyncio.wait_for(fut, 10)
        np.testing.assert_array_equal(r["out"], rows(1, 2, 0) * 2)
    finally:
        await b.stop()


@pytest.mark.asyncio
async def test_waits_while_others_are_arriving_and_dispatches_a_full_batch_at_once() -> None:
    m = EchoModel()
    arriving = [1]
    b = Batcher(m, workers=1, threads=1, max_batch_size=4, max_wait_s=3600, arriving=lambda: arriving[0])
    await b.start()
    try:
        futs = await run_jobs(b, [rows(1, 2, 0)])
        for _ in range(20):
            await asyncio.sleep(0)
        assert not futs[0].done() and m.shapes == []  # waiting for the others
        futs += await run_jobs(b, [rows(1, 2, 10), rows(2, 2, 20)])  # now 4 rows: full
        await asyncio.wait_for(asyncio.gather(*futs), 10)
        assert m.shapes == [(4, 2)]
    finally:
        await b.stop()


@pytest.mark.asyncio
async def test_requests_with_different_shapes_are_not_mixed() -> None:
    m = EchoModel()
    b = Batcher(m, workers=1, threads=1, max_batch_size=8, max_wait_s=0)
    await b.start()
    try:
        m.gate.clear()
        xs = [rows(1, 2, 0), rows(1, 3, 0), rows(1, 2, 5), rows(1, 3, 5), rows(1, 2, 9)]
        futs = await run_jobs(b, xs)
        m.gate.set()
        results = await asyncio.wait_for(asyncio.gather(*futs), 10)
        for x, r in zip(xs, results, strict=True):
            np.testing.assert_array_equal(r["out"], x * 2)
        # FIFO by the oldest request: after the first, the 3-column head batches with its kind
        assert m.shapes == [(1, 2), (2, 3), (2, 2)]
    finally:
        await b.stop()


@pytest.mark.asyncio
async def test_a_failing_batch_fails_its_requests_only() -> None:
    m = EchoModel()
    b = Batcher(m, workers=1, threads=1, max_batch_size=8, max_wait_s=0)
    await b.start()
    try:
        m.gate.clear()
        m.fail_next = True
        futs = await run_jobs(b, [rows(1, 2, 0), rows(1, 2, 1)])
        m.gate.set()
        with pytest.raises(RuntimeError, match="boom"):
            await asyncio.wait_for(futs[0], 10)
        r = await asyncio.wait_for(futs[1], 10)
        np.testing.assert_array_equal(r["out"], rows(1, 2, 1) * 2)
    finally:
        await b.stop()


@pytest.mark.asyncio
async def test_done_jobs_are_skipped_and_stop_fails_queued_jobs() -> None:
    m = EchoModel()
    b = Batcher(m, workers=1, threads=1, max_batch_size=8, max_wait_s=0)
    await b.start()
    m.gate.clear()
    loop = asyncio.get_running_loop()
    first, timed_out, queued = loop.create_future(), loop.create_future(), loop.create_future()
    b.submit(job(rows(1, 2, 0), first))
    j = job(rows(1, 2, 1), timed_out)
    b.submit(j)
    j.done = True  # e.g. its request timed out: never run, never answered by the batcher
    b.submit(job(rows(1, 2, 2), queued))
    stopper = asyncio.ensure_future(b.stop())
    await asyncio.sleep(0)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(queued, 10)
    m.gate.set()
    await asyncio.wait_for(stopper, 10)
    assert not timed_out.done()
    assert m.shapes == [(1, 2)]


@pytest.mark.asyncio
async def test_an_idle_server_runs_a_lone_request_on_the_loop_thread() -> None:
    m = EchoModel(single_row_seconds=0.001)
    arriving = [0]
    b = Batcher(m, workers=2, threads=1, max_batch_size=8, max_wait_s=0, arriving=lambda: arriving[0])
    await b.start()
    try:
        here = threading.current_thread().name
        (f,) = await run_jobs(b, [rows(1, 2, 0)])
        np.testing.assert_array_equal((await asyncio.wait_for(f, 10))["out"], rows(1, 2, 0) * 2)
        assert m.threads == [here] and b.inline_runs == 1
        arriving[0] = 1  # another request is on its way: hand this one to a worker
        (f,) = await run_jobs(b, [rows(1, 2, 1)])
        await asyncio.wait_for(f, 10)
        assert m.threads[-1].startswith("modelship-worker-") and b.inline_runs == 1
        m.gate.clear()  # keep a worker busy: then the next request also goes to a worker
        (busy,) = await run_jobs(b, [rows(1, 2, 2)])
        for _ in range(500):
            if len(m.threads) == 3:
                break
            await asyncio.sleep(0.01)
        arriving[0] = 0
        (second,) = await run_jobs(b, [rows(1, 2, 3)])
        m.gate.set()
        await asyncio.wait_for(asyncio.gather(busy, second), 10)
        assert all(t.startswith("modelship-worker-") for t in m.threads[1:]) and b.inline_runs == 1
    finally:
        await b.stop()


@pytest.mark.asyncio
async def test_slow_models_never_run_on_the_loop_thread() -> None:
    m = EchoModel(single_row_seconds=1.0)
    b = Batcher(m, workers=1, threads=1, max_batch_size=8, max_wait_s=0)
    await b.start()
    try:
        (f,) = await run_jobs(b, [rows(1, 2, 0)])
        await asyncio.wait_for(f, 10)
        assert m.threads[0].startswith("modelship-worker-") and b.inline_runs == 0
    finally:
        await b.stop()
