"""Helpers for integration tests against the real control plane (see hack/cluster/README.md).

Everything here waits on conditions with a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from modelship_dev import cluster as devcluster

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
# MODELSHIP_CRD_DIR: install the CRDs from elsewhere (e.g. freshly generated ones in a temp dir).
CRD_DIR = Path(os.environ.get("MODELSHIP_CRD_DIR") or REPO_ROOT / "crds")
TEST_FIELD_MANAGER = "modelship-tests"

OPERATOR_NAMESPACE = "modelship-system"
OPERATOR_SERVICE_ACCOUNT = "modelship-operator"
OPERATOR_CLUSTER_ROLE = "modelship-operator"


@dataclass(frozen=True)
class ClusterInfo:
    """A running control plane the tests talk to."""

    name: str
    kubeconfig: Path
    kubectl_path: str
    reused: bool
    expected_version: str  # "v1.34.4"

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built at the pinned version against this cluster as admin."""
        proc = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc


def admin_client(kubeconfig: Path) -> client.ApiClient:
    """An ApiClient with the kubeconfig's (admin) identity."""
    api: client.ApiClient = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return api


def close_client(api: client.ApiClient) -> None:
    api.close()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------------- waiting
def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    description: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy; return it. Fail after ``timeout`` seconds.

    ``probe`` may raise ApiException 404 while an object does not exist yet: that counts as "not yet".
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except ApiException as exc:
            if exc.status != 404:
                raise
            value, last = None, f"404 {exc.reason}"
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {description}; last: {last!r}")
        time.sleep(interval)


def condition(obj: Any, type_: str) -> Any:
    """The condition of ``type_`` on a typed object (``obj.status.conditions``) or a dict; None if absent."""
    if isinstance(obj, Mapping):
        conds = (obj.get("status") or {}).get("conditions") or []
        return next((c for c in conds if c.get("type") == type_), None)
    conds = getattr(getattr(obj, "status", None), "conditions", None) or []
    return next((c for c in conds if c.type == type_), None)


def wait_job_finished(api_client: client.ApiClient, namespace: str, name: str, timeout: float = 60) -> Any:
    """Wait until the Job has a Complete or Failed condition that is True; return the V1Job."""
    batch = client.BatchV1Api(api_client)

    def probe() -> Any:
        job = batch.read_namespaced_job(name, namespace)
        for t in ("Complete", "Failed"):
            c = condition(job, t)
            if c is not None and c.status == "True":
                return job
        return None

    return wait_for(probe, timeout=timeout, description=f"Job {namespace}/{name} to finish")


def job_pods(api_client: client.ApiClient, namespace: str, job_name: str) -> list[Any]:
    core = client.CoreV1Api(api_client)
    return list(core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}").items)


def uid_token(obj: Mapping[str, Any]) -> str:
    """The part of a ModelDeployment's uid in its stage Jobs' names (``<name>-opt-<revision>-<token>``): its first 8
    hex digits."""
    return str(obj["metadata"]["uid"])[:8]


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------------------- apply
_dynamic_clients: weakref.WeakKeyDictionary[client.ApiClient, DynamicClient] = weakref.WeakKeyDictionary()
_discovery_dir = Path(tempfile.mkdtemp(prefix="modelship-discovery-"))


def dynamic_client(api_client: client.ApiClient) -> DynamicClient:
    """A DynamicClient per ApiClient, with a private discovery cache (never a stale /tmp one)."""
    dyn = _dynamic_clients.get(api_client)
    if dyn is None:
        cache = _discovery_dir / f"{id(api_client)}-{uuid.uuid4().hex[:8]}.json"
        dyn = DynamicClient(api_client, cache_file=str(cache))  # type: ignore[no-untyped-call]
        _dynamic_clients[api_client] = dyn
    return dyn


def apply_manifest(
    api_client: client.ApiClient,
    manifest: Mapping[str, Any],
    *,
    field_manager: str = TEST_FIELD_MANAGER,
    namespace: str | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Server-side apply one object (any kind, CRDs included) and return the object the server returned.

    ``namespace`` fills in metadata.namespace for namespaced kinds when the manifest has none.
    Raises kubernetes.dynamic.exceptions.ApiException subclasses (e.g. ConflictError on a field
    manager conflict when ``force`` is False, UnprocessableEntityError on schema/CEL violations).
    """
    dyn = dynamic_client(api_client)
    resource = dyn.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
    body = dict(manifest)
    ns: str | None = None
    if resource.namespaced:
        meta = dict(body.get("metadata") or {})
        ns = meta.get("namespace") or namespace
        if not ns:
            raise ValueError(f"{manifest['kind']} {meta.get('name')} is namespaced: give a namespace")
        meta["namespace"] = ns
        body["metadata"] = meta
    kwargs: dict[str, Any] = {"field_manager": field_manager, "force_conflicts": force}
    if dry_run:
        kwargs["dry_run"] = "All"
    result: Any = dyn.server_side_apply(resource, body=body, namespace=ns, **kwargs)  # type: ignore[no-untyped-call]
    return dict(result.to_dict())


def load_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        with path.open() as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def install_crds(api_client: client.ApiClient, crd_dir: Path = CRD_DIR, timeout: float = 60) -> list[str]:
    """Apply every CRD in ``crd_dir/*.yaml`` and wait until each is Established; return their names."""
    docs = load_manifests(sorted(crd_dir.glob("*.yaml")))
    names: list[str] = []
    for doc in docs:
        apply_manifest(api_client, doc, field_manager=TEST_FIELD_MANAGER, force=True)
        names.append(doc["metadata"]["name"])
    ext = client.ApiextensionsV1Api(api_client)
    for name in names:

        def established(name: str = name) -> bool:
            crd = ext.read_custom_resource_definition(name)
            c = condition(crd, "Established")
            return c is not None and c.status == "True"

        wait_for(established, timeout=timeout, description=f"CRD {name} Established")
    if names:
        # Discovery of new kinds is eventually consistent: refresh the admin client's cache.
        dynamic_client(api_client).resources.invalidate_cache()
    return names


GATEWAY_API_GROUP = "gateway.networking.k8s.io"


def gateway_api_crd_dir() -> Path:
    """The Gateway API's standard-channel CRDs, cached by hack/cluster/gateway-api-crds (from the Go module
    proxy; hack/setup runs it)."""
    script = REPO_ROOT / "hack" / "cluster" / "gateway-api-crds"
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{script} failed: {out.stderr.strip()[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def install_gateway_api_crds(api_client: client.ApiClient, timeout: float = 60) -> list[str]:
    """Apply the Gateway API CRDs (only the CustomResourceDefinitions of the release) and wait until each is
    Established and HTTPRoute is in discovery; return their names."""
    docs = [d for d in load_manifests(sorted(gateway_api_crd_dir().glob("*.yaml")))
            if d.get("kind") == "CustomResourceDefinition"]  # fmt: skip
    ext = client.ApiextensionsV1Api(api_client)
    names = []
    for doc in docs:
        apply_manifest(api_client, doc, field_manager=TEST_FIELD_MANAGER, force=True)
        names.append(doc["metadata"]["name"])
    for name in names:

        def established(name: str = name) -> bool:
            c = condition(ext.read_custom_resource_definition(name), "Established")
            return c is not None and c.status == "True"

        wait_for(established, timeout=timeout, description=f"CRD {name} Established")
    wait_for(lambda: served_plurals(api_client, GATEWAY_API_GROUP, "v1") >= {"httproutes", "gateways"},
             timeout=timeout, description="HTTPRoute in discovery")  # fmt: skip
    dynamic_client(api_client).resources.invalidate_cache()
    return names


def remove_httproute_crd(api_client: client.ApiClient, timeout: float = 60) -> None:
    """Delete the HTTPRoute CRD (if installed) and wait until discovery no longer serves httproutes."""
    ext = client.ApiextensionsV1Api(api_client)
    try:
        ext.delete_custom_resource_definition(f"httproutes.{GATEWAY_API_GROUP}")
    except ApiException as exc:
        if exc.status != 404:
            raise
    wait_for(lambda: "httproutes" not in served_plurals(api_client, GATEWAY_API_GROUP, "v1"), timeout=timeout,
             description="httproutes gone from discovery")  # fmt: skip


def served_plurals(api_client: client.ApiClient, group: str, version: str) -> set[str]:
    """The resources discovery lists for group/version (empty when the group version is not served)."""
    params = api_client.param_serialize("GET", f"/apis/{group}/{version}", auth_settings=["BearerToken"])
    try:
        response = api_client.call_api(*params)
        response.read()
    except ApiException:
        return set()
    if response.status != 200:
        return set()
    return {r["name"] for r in json.loads(response.data).get("resources") or []}


# ---------------------------------------------------------------------------- namespaces
def create_namespace(api_client: client.ApiClient, prefix: str, timeout: float = 30) -> str:
    core = client.CoreV1Api(api_client)
    name = unique_name(prefix)[:63].strip("-")
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"modelship.io/test": "true"}))
    )
    # Pods cannot be admitted before kube-controller-manager creates the namespace's default ServiceAccount.
    wait_for(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=timeout,
        description=f"ServiceAccount {name}/default",
    )
    return name


@contextlib.contextmanager
def temporary_namespace(api_client: client.ApiClient, prefix: str) -> Iterator[str]:
    """A fresh namespace for the length of the block, deleted afterwards."""
    name = create_namespace(api_client, prefix)
    try:
        yield name
    finally:
        delete_namespace(api_client, name)


def delete_namespace(api_client: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api_client).delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


# ---------------------------------------------------------------------------- RBAC
def ensure_operator_identity(
    api_client: client.ApiClient,
    rules: Sequence[Mapping[str, Any]],
    *,
    namespace: str = OPERATOR_NAMESPACE,
    service_account: str = OPERATOR_SERVICE_ACCOUNT,
    cluster_role: str = OPERATOR_CLUSTER_ROLE,
) -> None:
    """Namespace + ServiceAccount + ClusterRole(rules) + ClusterRoleBinding, and the Role + RoleBinding in its
    own namespace (the revision caches: modelship.rbac.own_namespace_rules()), all server-side applied."""
    from modelship.rbac import own_namespace_rules

    own = f"{cluster_role}-own"
    manifests: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_role},
            "rules": [dict(r) for r in rules],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": own, "namespace": namespace},
            "rules": own_namespace_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": own, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": own},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
    ]
    for m in manifests:
        apply_manifest(api_client, m, force=True)


def service_account_client(
    admin: client.ApiClient, namespace: str, service_account: str, *, expiration_seconds: int = 3600
) -> client.ApiClient:
    """An ApiClient that authenticates as ``namespace/service_account`` with a TokenRequest token."""
    core = client.CoreV1Api(admin)
    req = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
    )
    resp: Any = core.create_namespaced_service_account_token(service_account, namespace, req)
    token = str(resp.status.token)
    admin_conf = admin.configuration
    conf = client.Configuration()
    conf.host = admin_conf.host
    conf.verify_ssl = admin_conf.verify_ssl
    conf.ssl_ca_cert = admin_conf.ssl_ca_cert
    conf.api_key = {"authorization": token}
    conf.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(conf)


def whoami(api_client: client.ApiClient) -> str:
    """The username the API server sees for ``api_client`` (SelfSubjectReview)."""
    review: Any = client.AuthenticationV1Api(api_client).create_self_subject_review(
        client.V1SelfSubjectReview(metadata=client.V1ObjectMeta())
    )
    return str(review.status.user_info.username)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


__all__ = [
    "CRD_DIR",
    "OPERATOR_NAMESPACE",
    "OPERATOR_SERVICE_ACCOUNT",
    "TEST_FIELD_MANAGER",
    "ClusterInfo",
    "admin_client",
    "apply_manifest",
    "close_client",
    "condition",
    "create_namespace",
    "delete_namespace",
    "devcluster",
    "dynamic_client",
    "ensure_operator_identity",
    "install_crds",
    "job_pods",
    "load_manifests",
    "service_account_client",
    "unique_name",
    "wait_for",
    "wait_job_finished",
    "whoami",
]
