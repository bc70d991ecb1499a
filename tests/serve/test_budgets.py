"""Sizing the memory budgets, taking and returning bytes, and the decode-cost bound checked against real peaks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from modelship.serve.limits import SMALL_REQUEST_BYTES, Budget, Hold, MiB, plan_memory

from .conftest import REPO, serve_env


def test_budgets_are_sized_from_the_memory_limit_minus_the_warm_server() -> None:
    plan = plan_memory(limit=512 * MiB, source="cgroup", baseline=150 * MiB)
    headroom = 512 * MiB - 150 * MiB - 512 * MiB // 5
    assert plan.inflight == headroom * 2 // 5 and plan.decoded == headroom * 3 // 5
    assert plan.max_request == min(64 * MiB, plan.inflight // 4, plan.decoded // 8)
    assert 16 * MiB < plan.max_request < 32 * MiB  # 64 MiB bodies are refused at their headers at 512Mi
    assert plan.baseline + plan.inflight + plan.decoded < 512 * MiB
    explicit = plan_memory(limit=512 * MiB, source="cgroup", baseline=150 * MiB, max_request=MiB, inflight=8 * MiB)
    assert (explicit.max_request, explicit.inflight, explicit.decoded) == (MiB, 8 * MiB, plan.decoded)
    lowered = plan_memory(limit=512 * MiB, source="cgroup", baseline=150 * MiB, max_request=500 * MiB)
    assert lowered.requested_max_request == 500 * MiB and lowered.max_request == plan.inflight - plan.inflight // 8
    assert Budget("b", lowered.inflight).fits_ever(lowered.max_request)
    unlimited = plan_memory(limit=None, source="none", baseline=150 * MiB)
    assert (unlimited.inflight, unlimited.max_request) == (1024 * MiB, 64 * MiB)
    tiny = plan_memory(limit=200 * MiB, source="cgroup", baseline=190 * MiB)
    assert tiny.inflight == 4 * MiB and tiny.decoded == 8 * MiB and tiny.max_request >= 64 * 1024


def test_budget_keeps_a_reserve_for_small_requests() -> None:
    b = Budget("t", 1024 * 1024)
    assert b.reserve == 128 * 1024
    assert b.take(800 * 1024)
    assert not b.take(SMALL_REQUEST_BYTES + 1)  # a large request may not use the reserve
    assert b.refused == 1
    assert b.take(100 * 1024)  # a small one may
    assert not b.fits_ever(900 * 1024) and b.fits_ever(800 * 1024)
    b.give(900 * 1024)
    assert b.used == 0 and b.peak == 900 * 1024


def test_a_hold_returns_its_bytes_once_answered_and_no_longer_in_use() -> None:
    inflight, decoded = Budget("inflight", 10 * MiB), Budget("decoded", 10 * MiB)
    h = Hold(inflight, decoded)
    assert h.take_body(MiB) and h.set_decoded(3 * MiB)
    assert h.set_decoded(2 * MiB) and decoded.used == 2 * MiB  # shrinking always works
    assert not h.set_decoded(20 * MiB) and decoded.used == 2 * MiB
    h.pin()  # a worker still runs on the tensors
    h.close()  # ... while the response is already written (a timeout)
    assert (inflight.used, decoded.used) == (MiB, 2 * MiB)
    h.unpin()
    assert (inflight.used, decoded.used) == (0, 0)
    h.close()
    assert (inflight.used, decoded.used) == (0, 0)




@pytest.mark.parametrize(
    ("kind", "values"),
    [("v2 ones", 2_000_000), ("v2 floats", 400_000), ("v1 nested", 600_000), ("v2 small", 5_000)],
)
def test_decode_cost_bounds_the_real_peak(kind: str, values: int) -> None:
    """The reservation made before parsing covers what parsing really takes (peak RSS of a fresh process), for
    the worst JSON ("1,1,1,..." is 2 bytes per value), ordinary floats, TF Serving row format and a small body."""
    code = f"""
import json, resource, sys
import numpy as np
sys.path.insert(0, {str(REPO)!r})
from tests.serve.fakes import FakeModel
from modelship.serve import codec, jsonparse
kind, n = {kind!r}, {values}
model = FakeModel()
if kind == "v2 ones":
    doc = {{"inputs": [{{"name": "x", "shape": [n // 4, 4], "datatype": "FP32", "data": [1] * n}}]}}
    body = json.dumps(doc, separators=(",", ":")).encode()
elif kind in ("v2 floats", "v2 small"):
    data = (np.random.default_rng(0).standard_normal(n).astype(np.float32)).tolist()
    body = json.dumps({{"inputs": [{{"name": "x", "shape": [n // 4, 4], "datatype": "FP32", "data": data}}]}}).encode()
else:
    rows = np.random.default_rng(0).standard_normal((n // 4, 4)).astype(np.float32).tolist()
    body = json.dumps({{"instances": rows}}).encode()
cost = jsonparse.decode_cost(body, len(body), nested=kind.startswith("v1"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
decoded = codec.v1_decode(model, body) if kind.startswith("v1") else codec.v2_decode(model, body, None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps({{"cost": cost, "peak": peak, "rows": decoded.rows, "body": len(body)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], env=serve_env(), capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    assert r["rows"] == values // 4
    assert r["peak"] <= r["cost"], r
    assert r["cost"] < 30 * r["body"]  # and not absurdly above it
