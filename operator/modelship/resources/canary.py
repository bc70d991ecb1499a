"""The Canary strategy's objects: the candidate's Deployment and Service (<name>-canary), and how the stable pods
learn where to mirror: they read the mirror settings the candidate's pods offer (``modelship serve
--mirror-offer``, at /mirror on their metrics port) through the candidate's Service, every second. While no
candidate pod runs, nothing answers there and nothing is mirrored; the stable pods are never restarted for it.

Traffic split without a mesh: the one Service selects the serving pods of every revision by common labels, so
a live candidate's pods take their share of connections from kube-proxy's random choice among endpoints,
i.e. candidate replicas / all replicas. In the shadow phase the candidate's pods carry another
``app.kubernetes.io/name`` so the Service does not select them: they see only what the stable pods mirror to
them through the candidate's own Service.
"""

from __future__ import annotations

import json
from typing import Any

from ..api.modeldeployment import ModelDeployment
from ..api.serving import RolloutStrategy
from ..config import OperatorConfig
from .kinds import SERVICE
from .meta import (
    INSTANCE_LABEL,
    MODELDEPLOYMENT_LABEL,
    NAME_LABEL,
    SHADOW_NAME,
    TEMPLATE_ANNOTATION,
    TRACK_LABEL,
    canary_name,
    object_meta,
)
from .serving import ServedArtifact, deployment, template_digest

MIRROR_PATH = "/mirror"
"""Where a candidate's metrics port offers its mirror settings (``modelship serve --mirror-offer``)."""


def canary_selector(md: ModelDeployment) -> dict[str, str]:
    """Selects the candidate's pods (shadow or live) and nothing else."""
    return {INSTANCE_LABEL: md.metadata.name, MODELDEPLOYMENT_LABEL: md.metadata.name, TRACK_LABEL: "canary"}


def canary_deployment(
    md: ModelDeployment,
    revision: str,
    config: OperatorConfig,
    image: str | None,
    replicas: int,
    live: bool,
    artifact: ServedArtifact | None = None,
    offer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The candidate's Deployment: the serving Deployment of ``revision`` under its own name and selector,
    mirroring nothing itself and offering ``offer`` to the stable pods; ``live`` pods are selected by the
    Service, shadow ones are not."""
    dep = deployment(md, revision, config, image, replicas, artifact, mirror_from=None)
    if offer is not None:
        dep["spec"]["template"]["spec"]["containers"][0]["args"] += [
            "--mirror-offer",
            json.dumps(offer, sort_keys=True),
        ]
    name = canary_name(md)
    dep["metadata"]["name"] = name
    dep["metadata"]["labels"][TRACK_LABEL] = "canary"
    spec = dep["spec"]
    spec["selector"] = {"matchLabels": canary_selector(md)}
    pod_labels = spec["template"]["metadata"]["labels"]
    pod_labels[TRACK_LABEL] = "canary"
    if not live:
        pod_labels[NAME_LABEL] = SHADOW_NAME
    spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    spec["revisionHistoryLimit"] = 1
    dep["metadata"]["annotations"][TEMPLATE_ANNOTATION] = template_digest(spec["template"])  # the template it runs
    return dep


def candidate_template(
    md: ModelDeployment, revision: str, config: OperatorConfig, image: str | None, artifact: ServedArtifact | None
) -> str:
    """A digest of the candidate's pod template as the spec renders it, whatever the phase (its shadow labels and
    no mirror offer; replicas are not in the template), together with its progress deadline
    (progressDeadlineSeconds: its Deployment's, and the crash loop's clock). What a rollback for the candidate's pods
    judged (status.rollout.rolledBackTemplate): a spec that renders another one, or another deadline, tries the
    revision again. A ``kubectl rollout restart`` of the candidate's Deployment is recorded beside it
    (rolledBackRestartedAt), not in it: a record written before that field, whose digest has no restart, is not
    taken for another template because of a restart made before its rollback."""
    dep = canary_deployment(md, revision, config, image, 0, False, artifact)
    pods = dep["metadata"]["annotations"][TEMPLATE_ANNOTATION]
    return template_digest({"template": pods, "progressDeadlineSeconds": dep["spec"]["progressDeadlineSeconds"]})


def canary_service(md: ModelDeployment) -> dict[str, Any]:
    """The candidate's own Service: where the stable pods send mirrored requests."""
    meta = object_meta(md, canary_name(md), "server")
    meta["labels"][TRACK_LABEL] = "canary"
    return {
        **SERVICE.type_meta(),
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": canary_selector(md),
            "ports": [
                {"name": "http", "port": md.spec.serving.port, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": md.spec.serving.metrics_port, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def mirror_source(md: ModelDeployment, canary_service_ip: str | None) -> str | None:
    """Where the stable pods read their mirror settings: the candidate's offer behind its Service (Canary
    strategy, once the Service has its address)."""
    if md.spec.serving.rollout.strategy != RolloutStrategy.CANARY or not canary_service_ip:
        return None
    return f"http://{canary_service_ip}:{md.spec.serving.metrics_port}{MIRROR_PATH}"


def mirror_offer(md: ModelDeployment, canary_service_ip: str, percent: int, candidate: str) -> dict[str, Any]:
    """The mirror settings the candidate offers: ``percent`` of the stable pods' requests, to its own Service,
    compared as the analysis says."""
    analysis = md.spec.serving.rollout.canary_spec().analysis
    return {
        "url": f"http://{canary_service_ip}:{md.spec.serving.port}",
        "percent": percent,
        "candidate": candidate,
        "comparison": analysis.comparison.value.lower(),
        "rtol": analysis.relative_tolerance,
        "atol": analysis.absolute_tolerance,
    }
