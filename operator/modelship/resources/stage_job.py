"""The envelope both stage Jobs share (optimization and image build): placement from the spec's job settings,
labels and owner, attempt annotation, limits, TTL and a failure policy that never blames the model for a
node drain."""

from __future__ import annotations

from typing import Any

from ..api.jobs import JobSettings
from ..api.modeldeployment import ModelDeployment
from ..config import OperatorConfig
from .kinds import JOB
from .meta import object_meta, tolerations_wire

IGNORE_DISRUPTION = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


def fail_job_on_exit_codes(container: str, codes: list[int]) -> dict[str, Any]:
    """A podFailurePolicy rule: a pod whose ``container`` exits with one of ``codes`` fails the whole Job at once
    (the stage declared the input at fault: retrying the same input cannot help)."""
    return {"action": "FailJob", "onExitCodes": {"containerName": container, "operator": "In", "values": codes}}


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
) -> dict[str, Any]:
    """A batch/v1 Job around ``pod_spec`` (which gets the spec's node selector and tolerations, and what every
    stage pod is: never restarted in place, no API token, no {SERVICE}_PORT=tcp://... env vars over the
    container's own settings)."""
    pod_spec = {"restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
                **pod_spec}  # fmt: skip
    if settings.node_selector:
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **dict(sorted(settings.node_selector.items()))}
    if settings.tolerations:
        pod_spec["tolerations"] = [*pod_spec.get("tolerations", []), *tolerations_wire(settings.tolerations)]
    template_meta: dict[str, Any] = {"labels": object_meta(md, name, component, revision)["labels"]}
    if settings.pod_annotations:
        template_meta["annotations"] = dict(sorted(settings.pod_annotations.items()))
    return {
        **JOB.type_meta(),
        "metadata": object_meta(
            md, name, component, revision, {"modelship.io/attempt": str(attempt), **(annotations or {})}
        ),
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": settings.active_deadline_seconds,
            "ttlSecondsAfterFinished": config.job_ttl_seconds,
            # a node drain or preemption is not the model's fault: it does not count against backoffLimit
            "podFailurePolicy": {"rules": [*(failure_rules or []), IGNORE_DISRUPTION]},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
