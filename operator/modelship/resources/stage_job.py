"""The envelope both stage Jobs share (optimization and image build): placement from the spec's job settings,
labels and owner, attempt annotation, limits, TTL and a failure policy that never blames the model for a
node drain."""

from __future__ import annotations

from typing import Any

from ..api.jobs import JobSettings
from ..api.modeldeployment import ModelDeployment
from ..config import OperatorConfig
from .kinds import JOB
from .meta import MODELDEPLOYMENT_NAMESPACE_LABEL, OWNER_UID_LABEL, object_meta, tolerations_wire

IGNORE_DISRUPTION = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


def fail_job_on_exit_codes(container: str, codes: list[int]) -> dict[str, Any]:
    """A podFailurePolicy rule: a pod whose ``container`` exits with one of ``codes`` fails the whole Job at once
    (the stage declared the input at fault: retrying the same input cannot help)."""
    return {"action": "FailJob", "onExitCodes": {"containerName": container, "operator": "In", "values": codes}}


def owner_labels(md: ModelDeployment) -> dict[str, str]:
    """The ModelDeployment a stage Job (and its pods) belongs to, by namespace and uid."""
    out = {MODELDEPLOYMENT_NAMESPACE_LABEL: md.metadata.namespace or ""}
    if md.metadata.uid:  # absent only in `modelship render`
        out[OWNER_UID_LABEL] = md.metadata.uid
    return {k: v for k, v in out.items() if v}


def stage_job(
    md: ModelDeployment,
    *,
    name: str,
    component: str,
    revision: str,
    attempt: int,
    settings: JobSettings,
    config: OperatorConfig,
    pod_spec: dict[str, Any],
    annotations: dict[str, str] | None = None,
    failure_rules: list[dict[str, Any]] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A batch/v1 Job around ``pod_spec`` (which gets the spec's node selector and tolerations, and what every
    stage pod is: never restarted in place, no API token, no {SERVICE}_PORT=tcp://... env vars over the
    container's own settings).

    In ``namespace`` (the build namespace) when it is not the ModelDeployment's: there no owner reference can point
    back to the ModelDeployment, so the Job is bound to it by its namespace and uid labels alone (the operator
    deletes it when the ModelDeployment is gone)."""
    pod_spec = {"restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
                **pod_spec}  # fmt: skip
    if settings.node_selector:
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **dict(sorted(settings.node_selector.items()))}
    if settings.tolerations:
        pod_spec["tolerations"] = [*pod_spec.get("tolerations", []), *tolerations_wire(settings.tolerations)]
    metadata = object_meta(md, name, component, revision, {"modelship.io/attempt": str(attempt), **(annotations or {})})
    metadata["labels"] = {**metadata["labels"], **owner_labels(md)}
    if namespace is not None and namespace != md.metadata.namespace:
        metadata["namespace"] = namespace
        metadata.pop("ownerReferences", None)  # cross-namespace owner references are not allowed
    template_meta: dict[str, Any] = {"labels": metadata["labels"]}
    if settings.pod_annotations:
        template_meta["annotations"] = dict(sorted(settings.pod_annotations.items()))
    return {
        **JOB.type_meta(),
        "metadata": metadata,
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": settings.active_deadline_seconds,
            "ttlSecondsAfterFinished": config.job_ttl_seconds,
            # a node drain or preemption is not the model's fault: it does not count against backoffLimit
            "podFailurePolicy": {"rules": [*(failure_rules or []), IGNORE_DISRUPTION]},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
