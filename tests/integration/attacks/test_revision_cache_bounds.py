"""Item 3: the revision cache is bounded and pruned. An operator allowed 3 entries per namespace, and more
revisions than that built in one namespace: the cache keeps the 3 most recently used, far from 1 MiB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.integration.attacks.specs import md_doc
from tests.integration.attacks.tenant import Tenant
from tests.integration.cluster import OPERATOR_NAMESPACE
from tests.integration.operator_harness import OperatorProcess, running_operator

BOUND = 3


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    with running_operator(api_client, {"MODELSHIP_REVISION_CACHE_ENTRIES": str(BOUND),
                                       "MODELSHIP_REVISION_CACHE_BYTES": "65536"}) as op:  # fmt: skip
        yield op


def test_the_cache_is_filled_past_its_bound_and_keeps_the_most_recent(tenant: Tenant,
                                                                     api_client: client.ApiClient) -> None:  # fmt: skip
    revisions = []
    for i in range(BOUND + 2):
        doc = md_doc(f"m{i}")
        tenant.create_md(doc)
        revisions.append(tenant.wait_ready(f"m{i}")["status"]["revision"])
        cache = client.CoreV1Api(api_client).read_namespaced_config_map(
            f"modelship-revisions-{tenant.namespace}", OPERATOR_NAMESPACE
        )
        data = cache.data or {}
        assert len(data) == min(i + 1, BOUND)
        assert sum(len(k) + len(v.encode()) for k, v in data.items()) <= 65536
    assert sorted(data) == sorted(revisions[-BOUND:])  # the oldest two were evicted
