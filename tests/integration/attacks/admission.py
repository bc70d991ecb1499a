"""The chart's admission policy in the attack suite (items 5 and 7): the ValidatingAdmissionPolicy and binding as
``helm template`` renders them for a namespaced install watching the tenant's namespace, applied to the test
control plane for one test; and what a refused ``kubectl apply`` said."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from tests.chart.helm import Helm, helm_path
from tests.integration.attacks.tenant import Tenant
from tests.integration.cluster import ClusterInfo


def chart_admission_policy(namespace: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's ValidatingAdmissionPolicy and binding for a release watching ``namespace`` (the chart's
    default mode: the binding selects the watched namespaces), with the policy's defaults or ``values``."""
    path = helm_path()
    assert path is not None, "helm not found: run hack/tools/install-helm"
    objs = Helm(path).template({"operator.watchNamespaces": [namespace], **(values or {})}, release="attacks")
    return [o for o in objs if o["kind"].startswith("ValidatingAdmissionPolicy")]


@contextmanager
def admission_policy(
    cluster: ClusterInfo, namespace: str, values: dict[str, Any] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """The chart's admission policy on the API server for the duration of the block."""
    objs = chart_admission_policy(namespace, values)
    text = "\n---\n".join(yaml.safe_dump(o) for o in objs)

    def kubectl(*args: str) -> None:
        subprocess.run([cluster.kubectl_path, f"--kubeconfig={cluster.kubeconfig}", *args, "-f", "-"], input=text,
                       text=True, capture_output=True, check=True, timeout=60)  # fmt: skip

    kubectl("apply")
    try:
        yield objs
    finally:
        kubectl("delete", "--ignore-not-found")


def refused(tenant: Tenant, doc: dict[str, Any]) -> str:
    """Apply ``doc`` as the tenant, which must be refused (403 by an admission policy, 422 by the CRD): the API
    server's message."""
    try:
        tenant.apply(doc)
    except ApiException as exc:
        assert exc.status in (403, 422), exc.body
        return str(json.loads(exc.body or "{}").get("message") or exc.body)
    raise AssertionError(f"{doc['metadata']['name']}: admitted")
