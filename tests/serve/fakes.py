"""A pure-numpy ServedModel and an in-process server on a real socket, for tests without TensorFlow."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelship.serve.config import ServeConfig
from modelship.serve.model import Runner, ServedModel
from modelship.serve.server import Server
from modelship.serve.tensors import Array, TensorSpec

# exactly representable products and sums, so batched and single-row results agree bit for bit
W = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5) / 4


class FakeRunner(Runner):
    def __init__(self, model: FakeModel) -> None:
        self.model = model

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        m = self.model
        with m.lock:
            m.batches.append(int(inputs["x"].shape[0]))
        if m.gate is not None:
            m.gate.wait(timeout=30)
        if m.delay_s:
            time.sleep(m.delay_s)
        if m.fail is not None:
            raise m.fail
        x = inputs["x"].astype(np.float32)
        out = {"y": x @ W}
        if "k" in inputs:
            out["s"] = inputs["k"].astype(np.int64).sum(axis=1)
        return out


class FakeModel(ServedModel):
    """y = x @ W (x: FP32 [-1, 4]); with ``two_inputs`` also s = sum(k) (k: INT32 [-1, 2])."""

    platform = "fake"

    def __init__(self, name: str = "fake", *, two_inputs: bool = False, delay_s: float = 0.0) -> None:
        inputs = [TensorSpec("x", "FP32", (-1, 4))]
        outputs = [TensorSpec("y", "FP32", (-1, 3))]
        if two_inputs:
            inputs.append(TensorSpec("k", "INT32", (-1, 2)))
            outputs.append(TensorSpec("s", "INT64", (-1,)))
        super().__init__(name, "1", inputs, outputs, batchable=True, path="<fake>")
        self.delay_s = delay_s
        self.gate: threading.Event | None = None  # when set, runs block until the event is set
        self.fail: BaseException | None = None  # when set, runs raise it
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def create_runner(self, threads: int, max_batch_size: int) -> Runner:
        return FakeRunner(self)

    @staticmethod
    def expected(x: Any) -> Array:
        return np.asarray(x, dtype=np.float32) @ W


def wait_for(cond: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond()`` until it is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class ServerThread:
    """A real Server on 127.0.0.1:<free port>, its event loop in a background thread."""

    def __init__(self, *models: ServedModel, **cfg: Any) -> None:
        cfg.setdefault("workers", 2)
        cfg.setdefault("threads", 1)
        cfg.setdefault("drain_seconds", 0.0)
        cfg.setdefault("shutdown_timeout_s", 10.0)
        cfg.setdefault("metrics_port", 0)
        self.cfg = ServeConfig(model="<in-process>", host="127.0.0.1", port=0, **cfg)
        self.models = models
        self.loop = asyncio.new_event_loop()
        self.server: Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.shutdown_result: bool | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            try:
                self.loop.run_until_complete(self._start())
            except BaseException as e:
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            self.loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    async def _start(self) -> None:
        self.server = Server(self.cfg)
        await self.server.start()
        for m in self.models:
            await self.server.app.add_model(m)
        self.server.resize_budgets()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("server did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def metrics_url(self) -> str:
        """The metrics port: /metrics and health."""
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.metrics_port}"

    def call(self, fn: Any, timeout: float = 30) -> Any:
        """Run ``fn()`` (sync or coroutine function) on the server's loop and return its result."""

        async def wrapper() -> Any:
            r = fn()
            if asyncio.iscoroutine(r):
                r = await r
            return r

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        srv = self.server
        if srv is not None:

            async def down() -> bool:
                srv.request_stop(0.0)
                return await srv.shutdown()

            try:
                self.shutdown_result = self.call(down, timeout=60)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(30)
        else:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
