"""The attack suite's fixtures: the operator as its own ServiceAccount with exactly the chart's RBAC (one per
module), and a tenant (a namespace editor plus modeldeployments) in a fresh namespace per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.integration.attacks.tenant import Tenant
from tests.integration.operator_harness import OperatorProcess, running_operator


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    with running_operator(api_client, {"MODELSHIP_MAX_JOB_ATTEMPTS": "1"}) as op:
        yield op


@pytest.fixture
def tenant(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Iterator[Tenant]:
    t = Tenant(api_client, namespace)
    try:
        yield t
    finally:
        t.close()
