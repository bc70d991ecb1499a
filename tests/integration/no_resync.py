"""The operator with no periodic resync within a test module, and the test's Cluster under it: only a watch event
(a Deployment's, an EndpointSlice's, ...) or the operator's own timer can wake a ModelDeployment, so a test proves
that the right one does, not that a resync happened to come. A module takes both fixtures by binding them
(``operator, k = no_resync.operator, no_resync.k``; pytest finds fixtures among a module's names): each module
gets its own operator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.test_operator import Cluster

NO_RESYNC = {"MODELSHIP_RESYNC_SECONDS": "3600"}
"""Longer than any test module runs."""


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    with running_operator(api_client, NO_RESYNC) as op:
        yield op


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:
    return Cluster(api_client, namespace)
