"""The attacker: a tenant identity with exactly the rights of a namespace editor (the built-in ``edit``
ClusterRole, bound in the tenant's namespace) plus ``modeldeployments`` (not their status), as a platform team
would hand out. Attacks run as this identity against the real API server; what they try and fail to do is
checked with the admin's snapshots (``snapshot.py``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelship import GROUP, PLURAL, VERSION
from tests.integration.attacks.snapshot import controlled_by, snapshot
from tests.integration.cluster import apply_manifest, close_client, condition, service_account_client, wait_for
from tests.integration.operator_harness import hostpath_volume

TENANT = "tenant"
"""The tenant's ServiceAccount (and its Role and bindings) in the tenant namespace."""
MD_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
"""What a tenant may do with ModelDeployments: everything but their status (the operator's)."""
RBAC = "rbac.authorization.k8s.io/v1"


def tenant_manifests(namespace: str) -> list[dict[str, Any]]:
    """ServiceAccount, the edit ClusterRole bound in the namespace, and a Role for modeldeployments."""
    subject = [{"kind": "ServiceAccount", "name": TENANT, "namespace": namespace}]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": TENANT, "namespace": namespace}},
        {
            "apiVersion": RBAC, "kind": "RoleBinding", "metadata": {"name": f"{TENANT}-edit", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": subject,
        },
        {
            "apiVersion": RBAC, "kind": "Role",
            "metadata": {"name": f"{TENANT}-modeldeployments", "namespace": namespace},
            "rules": [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": MD_VERBS}],
        },
        {
            "apiVersion": RBAC, "kind": "RoleBinding",
            "metadata": {"name": f"{TENANT}-modeldeployments", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{TENANT}-modeldeployments"},
            "subjects": subject,
        },
    ]  # fmt: skip


def can_i(api: client.ApiClient, namespace: str, verb: str, resource: str, group: str = "",
          subresource: str = "") -> bool:  # fmt: skip
    """SelfSubjectAccessReview as ``api``'s identity."""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=group, resource=resource, subresource=subresource or None
            )
        )
    )
    result: Any = client.AuthorizationV1Api(api).create_self_subject_access_review(review)
    return bool(result.status.allowed)


@dataclass
class Tenant:
    """The tenant's client in its namespace, and the admin's for checks."""

    admin: client.ApiClient
    namespace: str
    api: client.ApiClient = field(init=False)

    def __post_init__(self) -> None:
        for manifest in tenant_manifests(self.namespace):
            apply_manifest(self.admin, manifest, force=True)
        self.api = service_account_client(self.admin, self.namespace, TENANT)
        # RBAC is eventually consistent in the authorizer's cache: wait until the tenant is what we said
        wait_for(lambda: can_i(self.api, self.namespace, "create", PLURAL, GROUP), timeout=30,
                 description="the tenant may create modeldeployments")  # fmt: skip
        wait_for(lambda: can_i(self.api, self.namespace, "create", "services"), timeout=30,
                 description="the tenant is a namespace editor")  # fmt: skip

    def close(self) -> None:
        close_client(self.api)

    # -- as the tenant ----------------------------------------------------------------------------
    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as the tenant (force: the tenant owns what it writes)."""
        return apply_manifest(self.api, manifest, namespace=self.namespace, force=True, field_manager=TENANT)

    def create_md(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Apply a ModelDeployment as the tenant, with a volume for its artifact claim (the test cluster has no
        provisioner)."""
        hostpath_volume(self.admin, self.namespace, f"{doc['metadata']['name']}-artifacts")
        return self.apply(doc)

    def delete_md(self, name: str, timeout: float = 60) -> None:
        """Delete it as the tenant and wait until it and everything it controlled are gone."""
        custom = client.CustomObjectsApi(self.api)
        uid = self.md(name)["metadata"]["uid"]
        custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

        def gone() -> bool:
            try:
                self.md(name)
                return False
            except ApiException as exc:
                if exc.status != 404:
                    raise
            return not controlled_by(snapshot(self.admin, self.namespace), uid)

        wait_for(gone, timeout=timeout, description=f"{name} and its children deleted")

    # -- as the admin, to check ---------------------------------------------------------------------
    def md(self, name: str) -> dict[str, Any]:
        obj: Any = client.CustomObjectsApi(self.admin).get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return dict(obj)

    def wait_stalled(self, name: str, reason: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until the ModelDeployment is Stalled with ``reason`` for its current generation; return it."""

        def probe() -> dict[str, Any] | None:
            obj = self.md(name)
            c = condition(obj, "Stalled")
            current = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
            return obj if c and c["status"] == "True" and c["reason"] == reason and current else None

        try:
            return wait_for(probe, timeout=timeout, description=f"{name} Stalled {reason}")
        except AssertionError as exc:
            status = json.dumps(self.md(name).get("status"), indent=1)
            raise AssertionError(f"{exc}\nlast status: {status}") from None

    def wait_ready(self, name: str, timeout: float = 120) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.md(name)
            c = condition(obj, "Ready")
            return obj if c and c["status"] == "True" else None

        return wait_for(probe, timeout=timeout, description=f"{name} Ready")

    def events(self, name: str) -> list[Any]:
        """Events about the ModelDeployment ``name``."""
        core = client.CoreV1Api(self.admin)
        selector = f"involvedObject.kind=ModelDeployment,involvedObject.name={name}"
        return list(core.list_namespaced_event(self.namespace, field_selector=selector).items)

    def wait_event(self, name: str, reason: str, timeout: float = 30.0) -> Any:
        """The first Event ``reason`` about the ModelDeployment ``name`` (the operator posts it after the status it
        explains: waited for, with a deadline)."""
        return wait_for(
            lambda: next((e for e in self.events(name) if e.reason == reason), None),
            timeout=timeout,
            description=f"Event {reason} about {name}",
        )

    def forbidden(self, call: Any) -> bool:
        """True when ``call()`` (as the tenant) is refused with 403."""
        try:
            call()
        except ApiException as exc:
            return bool(exc.status == 403)
        return False


def md_uid(tenant: Tenant, name: str) -> str:
    return str(tenant.md(name)["metadata"]["uid"])
