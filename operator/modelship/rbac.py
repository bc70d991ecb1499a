"""The operator's permissions, derived from what it really calls. One source for the Helm chart's
ClusterRole/Role and for the integration tests, which run the operator under exactly these rules."""

from __future__ import annotations

from typing import Any

from . import GROUP, PLURAL

READ = ["get", "list", "watch"]
MANAGE = ["get", "list", "watch", "create", "patch", "delete"]


def operator_rules(cluster_scope: bool = True) -> list[dict[str, Any]]:
    """PolicyRules (rbac.authorization.k8s.io/v1) of the operator.

    cluster_scope adds what kopf needs to discover namespaces and CRDs when it watches the whole cluster.
    """
    rules: list[dict[str, Any]] = [
        # the resource itself: read only (spec is Git's); status through the subresource, merge-patched
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": READ},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
        # stage Jobs are immutable: created and deleted, never patched
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": [*READ, "create", "delete"]},
        # termination messages of finished Job pods; readiness of serving pods
        {"apiGroups": [""], "resources": ["pods"], "verbs": READ},
        {"apiGroups": [""], "resources": ["services", "persistentvolumeclaims"], "verbs": MANAGE},
        # the namespace's revision cache (modelship-revisions): merge-patched, never replaced
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": [*READ, "create", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": MANAGE},
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": READ},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": MANAGE},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": MANAGE},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": MANAGE},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    if cluster_scope:
        rules += [
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
            {
                "apiGroups": ["apiextensions.k8s.io"],
                "resources": ["customresourcedefinitions"],
                "verbs": ["list", "watch"],
            },
        ]
    return rules
