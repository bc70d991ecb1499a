"""Fixtures for integration tests against a real Kubernetes control plane.

The session brings up the kwok-based cluster from hack/cluster (or reuses a live one), installs
every CRD in crds/, and hands each test a fresh namespace plus admin and operator API clients.

Environment:
  MODELSHIP_KUBECONFIG     use this live cluster as is (never torn down)
  MODELSHIP_CACHE          cache root of the built binaries (default /var/cache/modelship)
  MODELSHIP_CLUSTER_NAME   kwokctl cluster name (default modelship-test)
  MODELSHIP_KEEP_CLUSTER   1: leave a cluster this session started running afterwards
  MODELSHIP_CRD_DIR        install the CRDs from this directory instead of crds/
  CI                       set: missing binaries FAIL the session instead of skipping it
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

_REPO_ROOT = Path(__file__).resolve().parents[2]
# Import helpers as `tests.integration.cluster` and the operator as `modelship` even when pytest runs
# without `pythonpath = ["operator", "."]` in its configuration.
for _p in (_REPO_ROOT / "operator", _REPO_ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from modelship_dev import cluster as devcluster  # noqa: E402
from tests.integration.cluster import (  # noqa: E402
    CRD_DIR,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    ClusterInfo,
    admin_client,
    close_client,
    create_namespace,
    delete_namespace,
    ensure_operator_identity,
    env_flag,
    install_crds,
    service_account_client,
)

_INTEGRATION_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs against the real kube-apiserver built by hack/cluster (CI runs them)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/integration is an integration test: `-m "not integration"` skips it.
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _unavailable(message: str) -> None:
    if env_flag("CI"):
        pytest.fail(f"integration control plane unavailable in CI: {message}", pytrace=False)
    pytest.skip(message)


def _live(kubeconfig: Path) -> bool:
    try:
        api = admin_client(kubeconfig)
        try:
            client.VersionApi(api).get_code(_request_timeout=5)
        finally:
            close_client(api)
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterInfo]:
    versions = devcluster.read_versions()
    expected = f"v{versions.k8s}"
    bindir = devcluster.bin_dir(versions)
    kubectl_path = str(bindir / "kubectl")
    if not os.access(kubectl_path, os.X_OK):
        kubectl_path = shutil.which("kubectl") or kubectl_path

    external = os.environ.get("MODELSHIP_KUBECONFIG")
    if external:
        kc = Path(external)
        if not _live(kc):
            _unavailable(f"MODELSHIP_KUBECONFIG={kc} does not point at a live cluster")
        yield ClusterInfo("external", kc, kubectl_path, reused=True, expected_version=expected)
        return

    missing = devcluster.missing_binaries(bindir)
    if missing:
        _unavailable(
            f"control-plane binaries missing in {bindir} ({', '.join(missing)}): run hack/cluster/build-binaries"
        )

    dc = devcluster.DevCluster(os.environ.get("MODELSHIP_CLUSTER_NAME") or devcluster.DEFAULT_NAME, versions)
    if dc.exists() and dc.interrupted_session():
        # a session killed mid-test left its objects (a chart release, an admission policy, an older CRD): start anew
        print(f"cluster {dc.name}: the last test session on it did not end; making it anew")
        dc.down()
    reused = dc.exists() and dc.healthy()
    try:
        dc.up()
    except devcluster.DevClusterError as exc:
        # Binaries are there, so this is a real failure, in CI or not.
        pytest.fail(f"could not start the test cluster: {exc}", pytrace=False)
    dc.claim_session()
    info = ClusterInfo(dc.name, dc.kubeconfig, kubectl_path, reused=reused, expected_version=expected)
    try:
        yield info
    finally:
        dc.release_session()
        if not reused and not env_flag("MODELSHIP_KEEP_CLUSTER"):
            dc.down()


@pytest.fixture(scope="session")
def api_client(cluster: ClusterInfo) -> Iterator[client.ApiClient]:
    """Cluster-admin ApiClient (the kubeconfig's identity)."""
    api = admin_client(cluster.kubeconfig)
    try:
        yield api
    finally:
        close_client(api)


@pytest.fixture(scope="session", autouse=True)
def crds(api_client: client.ApiClient) -> list[str]:
    """Every CRD in crds/*.yaml, applied and Established (once, before the first test). Their names."""
    return install_crds(api_client, CRD_DIR)


def _sanitize(nodeid: str) -> str:
    name = nodeid.rsplit("::", 1)[-1].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", name).strip("-")
    return name[:40].strip("-") or "test"


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = create_namespace(api_client, _sanitize(request.node.nodeid))
    try:
        yield name
    finally:
        delete_namespace(api_client, name)


@pytest.fixture(scope="session")
def operator_rules() -> list[dict[str, Any]]:
    """The operator's ClusterRole rules, from modelship.rbac.operator_rules()."""
    try:
        from modelship.rbac import operator_rules  # written by another change: import lazily
    except ImportError as exc:
        pytest.skip(f"modelship.rbac.operator_rules is not available yet: {exc}")
    return [dict(r) for r in operator_rules()]


@pytest.fixture(scope="session")
def operator_api_client(
    api_client: client.ApiClient, operator_rules: list[dict[str, Any]]
) -> Iterator[client.ApiClient]:
    """ApiClient authenticated as ServiceAccount modelship-system/modelship-operator, bound to a
    ClusterRole made of modelship.rbac.operator_rules()."""
    ensure_operator_identity(api_client, operator_rules)
    api = service_account_client(api_client, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
    try:
        yield api
    finally:
        close_client(api)
