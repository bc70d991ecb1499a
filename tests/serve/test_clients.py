"""Clients written for KServe work unchanged: kserve's own InferenceRESTClient, v1 and v2, JSON and binary."""

from __future__ import annotations

import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from .fakes import FakeModel, ServerThread

X = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0], [3.0, 3.0, 3.0, 3.0]], dtype=np.float32)
K = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int32)


@pytest.mark.asyncio
@pytest.mark.parametrize("binary", [False, True])
async def test_kserve_v2_client(fake_server: ServerThread, binary: bool) -> None:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    try:
        assert await client.is_server_live(fake_server.url) is True
        assert await client.is_server_ready(fake_server.url) is True
        assert await client.is_model_ready(fake_server.url, "fake") is True
        x = InferInput(name="x", shape=list(X.shape), datatype="FP32")
        x.set_data_from_numpy(X, binary_data=binary)
        k = InferInput(name="k", shape=list(K.shape), datatype="INT32")
        k.set_data_from_numpy(K, binary_data=binary)
        req = InferRequest(model_name="fake", infer_inputs=[x, k], request_id="abc")
        res = await client.infer(fake_server.url, req, model_name="fake")
        outs = {o.name: o.as_numpy() for o in res.outputs}
        np.testing.assert_array_equal(outs["y"], FakeModel.expected(X))
        np.testing.assert_array_equal(outs["s"], K.sum(axis=1))
        assert res.id == "abc"
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_kserve_v1_client(fake_server: ServerThread) -> None:
    client = InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=30))
    try:
        assert await client.is_model_ready(fake_server.url, "fake") is True
        res = await client.infer(
            fake_server.url,
            {"instances": [{"x": x.tolist(), "k": k.tolist()} for x, k in zip(X, K, strict=True)]},
            model_name="fake",
        )
        y = np.asarray([p["y"] for p in res["predictions"]], dtype=np.float32)
        np.testing.assert_array_equal(y, FakeModel.expected(X))
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_kserve_client_sees_not_ready_model() -> None:
    with ServerThread() as s:
        s.call(lambda: s.server.app.expect("late"))  # type: ignore[union-attr]
        for protocol in ("v1", "v2"):
            client = InferenceRESTClient(RESTConfig(protocol=protocol, retries=0, timeout=30))
            try:
                assert await client.is_model_ready(s.url, "late") is False
            finally:
                await client.close()
