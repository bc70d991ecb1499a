"""Names, labels, owner references and security contexts shared by every object the operator creates."""

from __future__ import annotations

import hashlib
from typing import Any

from .. import API_VERSION, KIND
from ..api.modeldeployment import ModelDeployment

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
REVISION_LABEL = "modelship.io/revision"
MODELDEPLOYMENT_LABEL = "modelship.io/modeldeployment"
MANAGED_BY = "modelship"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""Set by the Job controller on a Job's pods."""
REVISION_CACHE_NAME = "modelship-revisions"
"""The namespace's revision cache: revision -> optimization summary and pushed image (a ConfigMap)."""
REVISION_CACHE_LABELS = {MANAGED_BY_LABEL: MANAGED_BY, "modelship.io/cache": "revisions"}
MAX_NAME = 63


def safe_name(*parts: str, limit: int = MAX_NAME) -> str:
    """Join parts with '-' into a DNS label; too long a name is cut and suffixed with a short hash so it stays
    unique and deterministic."""
    name = "-".join(p for p in parts if p)
    if len(name) <= limit:
        return name
    suffix = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{suffix}"


def optimize_job_name(md: ModelDeployment, revision: str, attempt: int = 1) -> str:
    return safe_name(md.metadata.name, "opt", revision, f"{attempt}" if attempt > 1 else "")


def build_job_name(md: ModelDeployment, revision: str, attempt: int = 1) -> str:
    return safe_name(md.metadata.name, "build", revision, f"{attempt}" if attempt > 1 else "")


def artifact_claim_name(md: ModelDeployment) -> str:
    return safe_name(md.metadata.name, "artifacts")


def serving_name(md: ModelDeployment) -> str:
    """Deployment, Service, HPA, PDB and NetworkPolicy share the ModelDeployment's own name."""
    return md.metadata.name


def selector_labels(md: ModelDeployment) -> dict[str, str]:
    """Labels that select the serving pods of every revision (stable for the Deployment's life)."""
    return {
        NAME_LABEL: "modelship-server",
        INSTANCE_LABEL: md.metadata.name,
        MODELDEPLOYMENT_LABEL: md.metadata.name,
    }


def labels(md: ModelDeployment, component: str, revision: str | None = None) -> dict[str, str]:
    """The fixed label set. Only our own keys: parent labels (e.g. Argo CD tracking) are never copied."""
    out = {
        NAME_LABEL: "modelship-server" if component == "server" else f"modelship-{component}",
        INSTANCE_LABEL: md.metadata.name,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGED_BY,
        PART_OF_LABEL: "modelship",
        MODELDEPLOYMENT_LABEL: md.metadata.name,
    }
    if revision:
        out[REVISION_LABEL] = revision
    return out


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    """Controller owner reference: children are garbage-collected with the ModelDeployment."""
    if not md.metadata.uid:
        raise ValueError("the ModelDeployment has no uid yet (read it from the API server before building children)")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": md.metadata.name,
        "uid": md.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    md: ModelDeployment,
    name: str,
    component: str,
    revision: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if md.metadata.namespace:
        meta["namespace"] = md.metadata.namespace
    meta["labels"] = labels(md, component, revision)
    if md.metadata.uid:  # absent only in `modelship render` (no cluster, no uid)
        meta["ownerReferences"] = [owner_reference(md)]
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return meta


RUN_AS_USER = 65532


def pod_security_context() -> dict[str, Any]:
    """Pod Security Standards "restricted" at pod level."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(read_only_root: bool = True) -> dict[str, Any]:
    """Pod Security Standards "restricted" at container level."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tolerations_wire(items: list[Any]) -> list[dict[str, Any]]:
    return [t.wire() for t in items]
