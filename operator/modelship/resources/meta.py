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
TEMPLATE_ANNOTATION = "modelship.io/template"
"""On a serving Deployment: a digest of the pod template the operator last applied to it, so a later look can tell
a Deployment whose template the operator is changing (a rollout about to start) from one only scaled."""
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
"""On a Deployment's pod template: when ``kubectl rollout restart`` last restarted its pods (kubectl's field manager
owns it; the operator's server-side apply, which never sets it, keeps it)."""
MODELDEPLOYMENT_LABEL = "modelship.io/modeldeployment"
TRACK_LABEL = "modelship.io/track"
"""canary on the candidate's pods (Canary strategy)."""
MANAGED_BY = "modelship"
SERVER_NAME = "modelship-server"
"""app.kubernetes.io/name of the serving pods the Service selects."""
SHADOW_NAME = "modelship-shadow"
"""app.kubernetes.io/name of a candidate's pods (Canary strategy) while the Service does not select them: the
shadow phase, and every phase when an HTTPRoute weighs the two Services."""
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""Set by the EndpointSlice controller on a Service's slices: the Service's name."""
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""Set by the Job controller on a Job's pods."""
MODELDEPLOYMENT_NAMESPACE_LABEL = "modelship.io/namespace"
"""On stage Jobs and their pods: the ModelDeployment's namespace (build Jobs run in the operator's build namespace,
where no owner reference can point back to it). Trusted only on objects in the build namespace."""
OWNER_UID_LABEL = "modelship.io/owner-uid"
"""On stage Jobs and their pods: the uid of the ModelDeployment they belong to (a build Job in the build namespace is
bound to its ModelDeployment by it, and deleted when that ModelDeployment is gone)."""
REVISION_CACHE_NAME = "modelship-revisions"
"""Prefix of the revision caches (ConfigMaps in the operator's namespace, one per tenant namespace)."""
MAX_NAME = 63


def safe_name(*parts: str, limit: int = MAX_NAME) -> str:
    """Join parts with '-' into a DNS label; too long a name is cut and suffixed with a short hash so it stays
    unique and deterministic."""
    name = "-".join(p for p in parts if p)
    if len(name) <= limit:
        return name
    suffix = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{suffix}"


UID_TOKEN = 8
"""Characters of the ModelDeployment's uid in its stage Jobs' names (``uid_token``)."""


def uid_token(md: ModelDeployment) -> str:
    """A short token of the ModelDeployment's uid for its stage Jobs' names: the uid's first ``UID_TOKEN`` hex
    digits (what ``kubectl get md NAME -o jsonpath='{.metadata.uid}'`` begins with), or a digest of a uid that is not
    a UUID; "" without a uid (``modelship render``, no cluster).

    Two incarnations of a ModelDeployment (deleted and applied again under the same name) never share a Job name:
    a Job deleted and created again under its name can inherit the Job controller's expectations for the old one
    and never get a pod (kubernetes/kubernetes#131917), and a Job an orphaning delete left behind would otherwise
    stall the new one on a NameConflict."""
    uid = md.metadata.uid or ""
    digits = uid.replace("-", "").lower()
    if len(digits) >= UID_TOKEN and all(c in "0123456789abcdef" for c in digits):
        return digits[:UID_TOKEN]
    return hashlib.sha256(uid.encode()).hexdigest()[:UID_TOKEN] if uid else ""


def _attempt(attempt: int) -> str:
    return f"{attempt}" if attempt > 1 else ""


def optimize_job_name(md: ModelDeployment, revision: str, attempt: int = 1) -> str:
    """``<name>-opt-<revision>-<uid token>[-<attempt>]``: the same for one ModelDeployment's attempt (found again
    after a restart), another for a namesake with another uid."""
    return safe_name(md.metadata.name, "opt", revision, uid_token(md), _attempt(attempt))


def build_job_name(md: ModelDeployment, revision: str, attempt: int = 1, shared: bool = False) -> str:
    """``[<namespace>-]<name>-build-<revision>-<uid token>[-<attempt>]``. ``shared``: in a build namespace every
    tenant's builds share, where the ModelDeployment's namespace is part of the name."""
    namespace = (md.metadata.namespace or "") if shared else ""
    return safe_name(namespace, md.metadata.name, "build", revision, uid_token(md), _attempt(attempt))


def export_job_name(md: ModelDeployment, revision: str, build_pod: str) -> str:
    """The export Job that uploads the artifact to one build pod (a retried build pod gets its own):
    ``<name>-export-<revision>-<uid token>-<build pod's suffix>``."""
    return safe_name(md.metadata.name, "export", revision, uid_token(md), build_pod.rsplit("-", 1)[-1])


def artifact_claim_name(md: ModelDeployment) -> str:
    return safe_name(md.metadata.name, "artifacts")


def serving_name(md: ModelDeployment) -> str:
    """Deployment, Service, HPA, PDB and NetworkPolicy share the ModelDeployment's own name."""
    return md.metadata.name


def canary_name(md: ModelDeployment) -> str:
    """The candidate's Deployment and Service under the Canary strategy."""
    return safe_name(md.metadata.name, "canary")


def selector_labels(md: ModelDeployment) -> dict[str, str]:
    """Labels that select the serving pods of every revision (stable for the Deployment's life)."""
    return {
        NAME_LABEL: SERVER_NAME,
        INSTANCE_LABEL: md.metadata.name,
        MODELDEPLOYMENT_LABEL: md.metadata.name,
    }


def labels(md: ModelDeployment, component: str, revision: str | None = None) -> dict[str, str]:
    """The fixed label set. Only our own keys: parent labels (e.g. Argo CD tracking) are never copied."""
    out = {
        NAME_LABEL: SERVER_NAME if component == "server" else f"modelship-{component}",
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


def controller_uid(obj: dict[str, Any]) -> str | None:
    """uid of the object's controller (the owner reference with ``controller: true``), if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or "") or None
    return None


def controlled_by(obj: dict[str, Any], owner_uid: str | None) -> bool:
    """Whether ``owner_uid`` is the object's controller (apimachinery's ``metav1.IsControlledBy``)."""
    return bool(owner_uid) and controller_uid(obj) == owner_uid


def describe_controller(obj: dict[str, Any]) -> str:
    """Who controls the object, for people: "no owner", "ModelDeployment digits (uid ...)", ..."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), None)
    if ref is None:
        return "owned by another object, not controlled by this ModelDeployment" if refs else "no owner"
    return f"controlled by {ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})"


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
