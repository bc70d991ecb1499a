"""The batcher on its own: coalescing, splitting, waiting policy, failures, shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from modelship.serve.batching import INLINE_RECEIVING_MAX_S, Batcher, Job, Result
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
async def test_a_body_being_received_of_any_size_keeps_a_lone_request_off_the_loop_thread() -> None:
    m = EchoModel(single_row_seconds=0.001)
    receiving = [1]  # e.g. a large upload: not "arriving" (that counts small bodies), but being received
    b = Batcher(m, workers=2, threads=1, max_batch_size=8, max_wait_s=0, receiving=lambda: receiving[0])
    await b.start()
    assert b.inline_policy == "when idle"
    try:
        (f,) = await run_jobs(b, [rows(1, 2, 0)])
        np.testing.assert_array_equal((await asyncio.wait_for(f, 10))["out"], rows(1, 2, 0) * 2)
        assert m.threads[0].startswith("modelship-worker-") and b.inline_runs == 0
        receiving[0] = 0
        (f,) = await run_jobs(b, [rows(1, 2, 1)])
        await asyncio.wait_for(f, 10)
        assert m.threads[1] == threading.current_thread().name and b.inline_runs == 1
    finally:
        await b.stop()


@pytest.mark.asyncio
async def test_a_tiny_model_runs_a_lone_request_on_the_loop_thread_while_a_large_body_is_received() -> None:
    m = EchoModel(single_row_seconds=0.0001)  # well within INLINE_RECEIVING_MAX_S
    receiving, arriving = [1], [0]
    b = Batcher(
        m, workers=2, threads=1, max_batch_size=8, max_wait_s=0,
        receiving=lambda: receiving[0], arriving=lambda: arriving[0],
    )  # fmt: skip
    await b.start()
    assert b.inline_policy == "when idle or receiving" and b.single_row_seconds == 0.0001
    try:
        here = threading.current_thread().name
        (f,) = await run_jobs(b, [rows(1, 2, 0)])
        np.testing.assert_array_equal((await asyncio.wait_for(f, 10))["out"], rows(1, 2, 0) * 2)
        assert m.threads == [here] and b.inline_runs == 1
        arriving[0] = 1  # a small request on its way still sends this one to a worker (they may batch)
        (f,) = await run_jobs(b, [rows(1, 2, 1)])
        await asyncio.wait_for(f, 10)
        assert m.threads[1].startswith("modelship-worker-") and b.inline_runs == 1
    finally:
        await b.stop()
    assert INLINE_RECEIVING_MAX_S < 0.001  # the model of the test above (0.001 s) is not tiny


@pytest.mark.asyncio
async def test_a_multi_row_batch_while_a_body_is_received_goes_to_a_worker() -> None:
    m = EchoModel(single_row_seconds=0.0001)  # one row is tiny, eight rows (0.8 ms) are not
    receiving = [1]
    b = Batcher(m, workers=2, threads=1, max_batch_size=8, max_wait_s=0, receiving=lambda: receiving[0])
    await b.start()
    assert b.inline_policy == "when idle or receiving"
    try:
        here = threading.current_thread().name
        (f,) = await run_jobs(b, [rows(8, 2, 0)])  # a full batch, not a large one: the loop would hold 0.8 ms
        np.testing.assert_array_equal((await asyncio.wait_for(f, 10))["out"], rows(8, 2, 0) * 2)
        assert m.shapes == [(8, 2)] and m.threads[0].startswith("modelship-worker-") and b.inline_runs == 0
        (f,) = await run_jobs(b, [rows(3, 2, 8)])  # 3 rows x 0.1 ms: within INLINE_RECEIVING_MAX_S
        await asyncio.wait_for(f, 10)
        assert m.threads[1] == here and b.inline_runs == 1
        receiving[0] = 0  # nothing being received: the full batch runs here again
        (f,) = await run_jobs(b, [rows(8, 2, 16)])
        await asyncio.wait_for(f, 10)
        assert m.threads[2] == here and b.inline_runs == 2
    finally:
        await b.stop()
    assert 3 * 0.0001 <= INLINE_RECEIVING_MAX_S < 8 * 0.0001


@pytest.mark.asyncio
async def test_slow_models_never_run_on_the_loop_thread() -> None:
    m = EchoModel(single_row_seconds=1.0)
    b = Batcher(m, workers=1, threads=1, max_batch_size=8, max_wait_s=0)
    await b.start()
    assert b.inline_policy == "never"
    try:
        (f,) = await run_jobs(b, [rows(1, 2, 0)])
        await asyncio.wait_for(f, 10)
        assert m.threads[0].startswith("modelship-worker-") and b.inline_runs == 0
    finally:
        await b.stop()


async def _until(cond: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_a_large_batch_never_runs_on_the_loop_thread() -> None:
    m = EchoModel(single_row_seconds=0.001)  # fast: lone small requests run on the loop thread
    b = Batcher(m, workers=1, threads=1, max_batch_size=8, max_wait_s=0)
    await b.start()
    try:
        (f,) = await run_jobs(b, [rows(20, 2, 0)])  # more rows than a batch: the idle server still hands it off
        np.testing.assert_array_equal((await asyncio.wait_for(f, 10))["out"], rows(20, 2, 0) * 2)
        assert m.threads[0].startswith("modelship-worker-") and b.inline_runs == 0
    finally:
        await b.stop()


@pytest.mark.asyncio
async def test_the_last_worker_is_kept_for_small_requests_while_large_ones_queue() -> None:
    m = EchoModel()
    b = Batcher(m, workers=2, threads=1, max_batch_size=8, max_wait_s=0)
    await b.start()
    try:
        m.gate.clear()  # batches block until released
        large1, large2, small = await run_jobs(b, [rows(20, 2, 0), rows(30, 2, 100), rows(1, 2, 200)])
        # the first large request takes a worker; the second waits, and the small one behind it gets the other
        await _until(lambda: len(m.shapes) == 2, "two batches to start")
        assert sorted(m.shapes) == [(1, 2), (20, 2)] and b.queued == 1
        m.gate.set()
        out = await asyncio.wait_for(asyncio.gather(large1, large2, small), 10)
        for got, x in zip(out, [rows(20, 2, 0), rows(30, 2, 100), rows(1, 2, 200)], strict=True):
            np.testing.assert_array_equal(got["out"], x * 2)
        assert sorted(m.shapes) == [(1, 2), (20, 2), (30, 2)]
    finally:
        m.gate.set()
        await b.stop()


@pytest.mark.asyncio
async def test_large_requests_still_run_when_no_small_one_waits() -> None:
    m = EchoModel()
    b = Batcher(m, workers=2, threads=1, max_batch_size=8, max_wait_s=0)
    await b.start()
    try:
        m.gate.clear()
        futs = await run_jobs(b, [rows(20, 2, 0), rows(20, 2, 100), rows(20, 2, 200)])
        await _until(lambda: len(m.shapes) == 1, "the first large batch to start")
        assert b.queued == 2 and b.busy_workers == 1  # one worker stays free for small requests
        (small,) = await run_jobs(b, [rows(2, 2, 300)])
        await _until(lambda: len(m.shapes) == 2, "the small request to start")
        assert m.shapes[-1] == (2, 2)
        m.gate.set()  # the large ones then run one after another
        await asyncio.wait_for(asyncio.gather(*futs, small), 10)
        assert len(m.shapes) == 4 and b.queued == 0
    finally:
        m.gate.set()
        await b.stop()
