"""`helm install` of charts/modelship into the real control plane, then the real operator run exactly as the
installed Deployment says (its args and env) under the ServiceAccount the chart created (a TokenRequest token,
as the kubelet would mount): a ModelDeployment reconciles to Ready, so the chart's RBAC is sufficient, and
requests outside it are refused. Both modes: cluster-wide (ClusterRole) and namespaced (Roles, --namespace).

The CRD is the session's (conftest applies crds/ with its own field manager), so helm runs with --skip-crds:
helm 4 server-side applies crds/ and would conflict with that manager. What helm would send for crds/ is
checked against the API server separately (a server-side dry run).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelship.rbac import operator_rules
from modelship.resources.meta import MODELDEPLOYMENT_LABEL
from tests.chart.helm import CHART, Helm, helm_path
from tests.integration.cluster import (
    ClusterInfo,
    close_client,
    condition,
    create_namespace,
    delete_namespace,
    env_flag,
    service_account_client,
    wait_for,
)
from tests.integration.operator_harness import LocalOperator, free_port, operator_pythonpath, token_kubeconfig
from tests.integration.test_operator import GROUP, PLURAL, VERSION, Cluster, md_doc

# ---------------------------------------------------------------------------- helm + the chart's operator


@pytest.fixture(scope="session")
def helm_bin() -> Helm:
    path = helm_path()
    if path is None or not os.access(path, os.X_OK):
        message = "helm not found: run hack/tools/install-helm (or set MODELSHIP_HELM)"
        if env_flag("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return Helm(path)


@dataclass
class ChartOperator(LocalOperator):
    """`python -m modelship <args of the installed Deployment>` with the Deployment's env, as its ServiceAccount.

    Only the liveness and metrics ports are moved to free local ports (several operators may run on this host).
    """

    admin: client.ApiClient
    namespace: str
    deployment: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="modelship-chart-operator-")))
    proc: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    metrics_port: int = 0
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    def start(self) -> None:
        dep: Any = client.AppsV1Api(self.admin).read_namespaced_deployment(self.deployment, self.namespace)
        pod = dep.spec.template.spec
        (container,) = pod.containers
        self.health_port, self.metrics_port = free_port(), free_port()
        self.args = []
        for arg in container.args:
            if arg.startswith("--liveness="):
                path = arg.split("/", 3)[3]  # http://0.0.0.0:PORT/<path>
                arg = f"--liveness=http://127.0.0.1:{self.health_port}/{path}"
            elif arg.startswith("--metrics-port=") and arg != "--metrics-port=0":
                arg = f"--metrics-port={self.metrics_port}"
            self.args.append(arg)
        kubeconfig = token_kubeconfig(self.admin, self.namespace, pod.service_account_name, self.workdir / "kubeconfig")
        self.env = {e.name: e.value for e in container.env or [] if e.value is not None}
        base = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_")}
        env = {
            **base,
            **self.env,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": operator_pythonpath(),
        }
        self._spawn(self.args, env)


@dataclass
class Release:
    helm: Helm
    cluster: ClusterInfo
    name: str
    namespace: str

    @property
    def fullname(self) -> str:
        return f"{self.name}-modelship"

    def install(self, values: dict[str, Any]) -> str:
        args = ["install", self.name, str(CHART), "--namespace", self.namespace, "--kubeconfig",
                str(self.cluster.kubeconfig), "--skip-crds", "--wait", "--timeout", "120s"]  # fmt: skip
        for key, value in values.items():
            args += ["--set-json", f"{key}={json.dumps(value)}"]
        return self.helm.run(*args, timeout=180).stdout

    def uninstall(self) -> None:
        self.helm.run("uninstall", self.name, "--namespace", self.namespace, "--kubeconfig",
                      str(self.cluster.kubeconfig), "--wait", "--timeout", "60s", check=False, timeout=120)  # fmt: skip

    def manifest(self) -> list[dict[str, Any]]:
        out = self.helm.run("get", "manifest", self.name, "--namespace", self.namespace, "--kubeconfig",
                            str(self.cluster.kubeconfig)).stdout  # fmt: skip
        return [d for d in yaml.safe_load_all(out) if d]


# Fast retries/resync for tests, through the chart's own values (so they are proven to reach the operator).
TEST_VALUES: dict[str, Any] = {"operator.resyncSeconds": 5, "jobs.retryBaseSeconds": 1, "jobs.maxAttempts": 2,
                               "operator.logFormat": "plain"}  # fmt: skip


@contextlib.contextmanager
def installed(
    helm: Helm, cluster: ClusterInfo, admin: client.ApiClient, name: str, values: dict[str, Any]
) -> Iterator[tuple[Release, ChartOperator]]:
    """A release in a fresh namespace and its operator running; uninstalled and deleted afterwards."""
    ns = create_namespace(admin, f"{name}-system")
    release = Release(helm, cluster, name, ns)
    try:
        release.install({**TEST_VALUES, **values})
        op = ChartOperator(admin, ns, release.fullname)
        op.start()
        try:
            yield release, op
        finally:
            op.stop()
            print(op.log()[-5000:])
    finally:
        release.uninstall()
        delete_namespace(admin, ns)


def sa_client(admin: client.ApiClient, release: Release) -> client.ApiClient:
    return service_account_client(admin, release.namespace, release.fullname)


def assert_forbidden(call: Any, *args: Any) -> None:
    with pytest.raises(ApiException) as info:
        call(*args)
    assert info.value.status == 403, info.value


def _plain(api: client.ApiClient, obj: object) -> dict[str, Any]:
    """A typed API object as the JSON the server sent (camelCase keys, no None fields)."""
    out: dict[str, Any] = api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return out


def assert_events_posted(admin: client.ApiClient, ns: str) -> None:
    """Events are best effort (a refused one is only logged by the operator): check they were really posted.
    They are posted by a background thread, so they may land a moment after the status says Ready."""
    wanted = {"OptimizedOptimized", "ReadyAvailable"}
    seen: set[str] = set()

    def posted() -> bool:
        events = client.CoreV1Api(admin).list_namespaced_event(ns, field_selector="involvedObject.kind=ModelDeployment")
        seen.update(e.reason for e in events.items)
        return wanted <= seen

    try:
        wait_for(posted, timeout=30, description="the operator's Events")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; Event reasons seen: {sorted(seen)}") from None


def reconcile_to_ready(admin: client.ApiClient, ns: str, timeout: float = 120) -> dict[str, Any]:
    k = Cluster(admin, ns)
    k.apply(md_doc())
    s = k.wait_condition("Ready", "True", timeout=timeout)
    for t in ("Optimized", "GatePassed", "ImageBuilt", "Deployed"):
        assert condition(s, t)["status"] == "True", t
    return s


# ---------------------------------------------------------------------------- cluster-wide mode
@pytest.fixture(scope="class")
def clusterwide(
    helm_bin: Helm, cluster: ClusterInfo, api_client: client.ApiClient
) -> Iterator[tuple[Release, ChartOperator]]:
    with installed(helm_bin, cluster, api_client, "msc", {"operator.clusterWide": True}) as pair:
        yield pair


class TestClusterWide:
    """operator.clusterWide: ClusterRole + ClusterRoleBinding; the operator watches every namespace but the ones
    the platform excludes (its own among them)."""

    def test_clusterwide_release_objects(
        self, clusterwide: tuple[Release, ChartOperator], api_client: client.ApiClient
    ) -> None:
        release, op = clusterwide
        rbac = client.RbacAuthorizationV1Api(api_client)
        role = _plain(api_client, rbac.read_cluster_role(release.fullname))
        assert role["rules"] == operator_rules(cluster_scope=True)
        binding: Any = rbac.read_cluster_role_binding(release.fullname)
        assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
            ("ServiceAccount", release.fullname, release.namespace)
        ]
        # the revision caches' Role in its own namespace, and the one for build Jobs (the release namespace too)
        roles = sorted(o["metadata"]["name"] for o in release.manifest() if o["kind"] in ("Role", "RoleBinding"))
        assert roles == [f"{release.fullname}-builds"] * 2 + [f"{release.fullname}-own"] * 2
        dep: Any = client.AppsV1Api(api_client).read_namespaced_deployment(release.fullname, release.namespace)
        assert dep.spec.replicas == 1 and dep.spec.strategy.type == "Recreate"
        assert dep.status.available_replicas == 1  # helm --wait saw it available
        # the operator runs with the chart's flags and env
        assert "--namespace" not in " ".join(op.args)
        assert op.env["MODELSHIP_RESYNC_SECONDS"] == "5" and op.env["MODELSHIP_MAX_JOB_ATTEMPTS"] == "2"

    def test_clusterwide_operator_reconciles_to_ready(
        self, clusterwide: tuple[Release, ChartOperator], api_client: client.ApiClient, namespace: str
    ) -> None:
        release, op = clusterwide
        s = reconcile_to_ready(api_client, namespace)
        assert s["status"]["phase"] == "Ready" and s["status"]["readyReplicas"] == 2
        assert op.metric("modelship_reconciles_total", 'result="ok"') > 0
        assert_events_posted(api_client, namespace)
        # the revision cache is in the operator's namespace, keyed by the tenant namespace; none in the tenant's
        core = client.CoreV1Api(api_client)
        cache: Any = core.read_namespaced_config_map(f"modelship-revisions-{namespace}", release.namespace)
        assert s["status"]["revision"] in cache.data
        ours = "app.kubernetes.io/managed-by=modelship"
        assert not core.list_namespaced_config_map(namespace, label_selector=ours).items

    def test_clusterwide_operator_refuses_its_own_namespace(
        self, clusterwide: tuple[Release, ChartOperator], api_client: client.ApiClient
    ) -> None:
        """The release namespace is excluded: a ModelDeployment there is Stalled NamespaceExcluded, nothing made."""
        release, _ = clusterwide
        k = Cluster(api_client, release.namespace, volume=False)
        k.apply(md_doc("intruder"))
        s = k.wait_condition("Stalled", "True", name="intruder", reason="NamespaceExcluded", timeout=60)
        assert f"namespace {release.namespace} is excluded" in condition(s, "Stalled")["message"]
        # nothing made for it (the release namespace is also the default build namespace: other ModelDeployments'
        # build Jobs run there)
        intruders = f"{MODELDEPLOYMENT_LABEL}=intruder"
        assert not client.BatchV1Api(api_client).list_namespaced_job(release.namespace, label_selector=intruders).items

    def test_clusterwide_requests_outside_the_rules_are_refused(
        self, clusterwide: tuple[Release, ChartOperator], api_client: client.ApiClient, namespace: str
    ) -> None:
        release, _ = clusterwide
        sa = sa_client(api_client, release)
        try:
            core, batch = client.CoreV1Api(sa), client.BatchV1Api(sa)
            assert_forbidden(core.list_namespaced_secret, namespace)
            assert_forbidden(core.list_secret_for_all_namespaces)  # get by name only: whether a Secret exists
            assert_forbidden(client.RbacAuthorizationV1Api(sa).list_cluster_role)
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"containers": [{"name": "c", "image": "busybox"}]}}  # fmt: skip
            assert_forbidden(core.create_namespaced_pod, namespace, pod)
            assert_forbidden(core.list_node)
            # Jobs are created and deleted, never patched
            assert_forbidden(batch.patch_namespaced_job, "x", namespace, {"metadata": {"labels": {"a": "b"}}})
            # and what it needs is allowed
            batch.list_namespaced_job(namespace)
            client.CustomObjectsApi(sa).list_cluster_custom_object(GROUP, VERSION, PLURAL)
        finally:
            close_client(sa)


# ---------------------------------------------------------------------------- namespaced mode
@dataclass
class Namespaced:
    release: Release
    op: ChartOperator
    watched: str
    unwatched: str


@pytest.fixture(scope="class")
def namespaced(helm_bin: Helm, cluster: ClusterInfo, api_client: client.ApiClient) -> Iterator[Namespaced]:
    watched = create_namespace(api_client, "watched")
    unwatched = create_namespace(api_client, "unwatched")
    try:
        values = {"operator.watchNamespaces": [watched]}
        with installed(helm_bin, cluster, api_client, "msn", values) as (release, op):
            yield Namespaced(release, op, watched, unwatched)
    finally:
        delete_namespace(api_client, watched)
        delete_namespace(api_client, unwatched)


def _reconciles(metrics: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("modelship_reconciles_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class TestNamespaced:
    """operator.watchNamespaces: a Role + RoleBinding in each, the operator started with --namespace."""

    def test_namespaced_release_has_roles_only(self, namespaced: Namespaced, api_client: client.ApiClient) -> None:
        release = namespaced.release
        kinds = sorted(o["kind"] for o in release.manifest())
        assert kinds == ["Deployment", "Role", "Role", "Role", "RoleBinding", "RoleBinding", "RoleBinding", "Service",
                         "ServiceAccount", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]  # fmt: skip
        rbac = client.RbacAuthorizationV1Api(api_client)
        role = _plain(api_client, rbac.read_namespaced_role(release.fullname, namespaced.watched))
        assert role["rules"] == operator_rules(cluster_scope=False)
        with pytest.raises(ApiException) as info:
            rbac.read_cluster_role(release.fullname)
        assert info.value.status == 404
        assert f"--namespace={namespaced.watched}" in namespaced.op.args

    def test_namespaced_operator_reconciles_its_namespace_and_ignores_others(
        self, namespaced: Namespaced, api_client: client.ApiClient
    ) -> None:
        ignored = Cluster(api_client, namespaced.unwatched)
        ignored.apply(md_doc())  # first, so the operator has every chance to (wrongly) pick it up
        # with --namespace the operator turns kopf's cluster-wide scanning off (the Roles forbid it), so it
        # starts watching at once: the same deadline as cluster-wide mode
        reconcile_to_ready(api_client, namespaced.watched, timeout=120)
        assert_events_posted(api_client, namespaced.watched)
        # a resync later (5 s), the other namespace's ModelDeployment is still untouched
        resynced = namespaced.op.metrics
        before = _reconciles(resynced())
        wait_for(lambda: _reconciles(resynced()) > before, timeout=30, description="a resync pass")
        other = ignored.md()
        assert "status" not in other or not other["status"], other.get("status")
        assert ignored.jobs() == []
        assert namespaced.unwatched not in namespaced.op.log()

    def test_namespaced_requests_outside_the_namespace_are_refused(
        self, namespaced: Namespaced, api_client: client.ApiClient
    ) -> None:
        sa = sa_client(api_client, namespaced.release)
        try:
            core, batch = client.CoreV1Api(sa), client.BatchV1Api(sa)
            custom = client.CustomObjectsApi(sa)
            assert_forbidden(batch.list_namespaced_job, namespaced.unwatched)
            assert_forbidden(custom.list_namespaced_custom_object, GROUP, VERSION, namespaced.unwatched, PLURAL)
            assert_forbidden(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
            assert_forbidden(core.list_namespace)
            assert_forbidden(core.list_namespaced_secret, namespaced.watched)
            # inside its namespace it has what it needs
            batch.list_namespaced_job(namespaced.watched)
            custom.list_namespaced_custom_object(GROUP, VERSION, namespaced.watched, PLURAL)
        finally:
            close_client(sa)

    def test_chart_operator_args_are_the_chart_defaults(self, namespaced: Namespaced) -> None:
        """Sanity of the harness itself: only the two ports were rewritten."""
        args: Sequence[str] = namespaced.op.args
        assert args[0] == "operator"
        assert "--log-format=plain" in args and "--workers=4" in args and "--log-level=INFO" in args
        assert any(a.startswith("--liveness=http://127.0.0.1:") and a.endswith("/healthz") for a in args)


# ---------------------------------------------------------------------------- the chart's CRD, as Go tools read it
def test_chart_crd_as_kubectl_and_helm_send_it_is_accepted(cluster: ClusterInfo) -> None:
    """What `helm install` (crds/) and `kubectl apply --server-side -f crds/` send, checked by the API server
    (dry run: the session's CRD stays as it is)."""
    proc = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts", "--field-manager=helm",
                           "-f", str(CHART / "crds"), check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
