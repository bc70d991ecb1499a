"""Volumes shared by the stage Jobs: the artifact claim and the claims named by pvc:// URIs."""

from __future__ import annotations

from typing import Any

from ..api.modeldeployment import ModelDeployment
from ..config import OperatorConfig
from .kinds import PERSISTENT_VOLUME_CLAIM
from .meta import artifact_claim_name, object_meta, safe_name


def artifact_claim(md: ModelDeployment, config: OperatorConfig) -> dict[str, Any]:
    """The per-ModelDeployment claim that holds optimized artifacts by revision (owned, so deleted with it)."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": config.artifact_storage_size}},
    }
    if config.artifact_storage_class:
        spec["storageClassName"] = config.artifact_storage_class
    return {
        **PERSISTENT_VOLUME_CLAIM.type_meta(),
        "metadata": object_meta(md, artifact_claim_name(md), "artifacts"),
        "spec": spec,
    }


def pvc_claims(md: ModelDeployment) -> list[str]:
    """Claims named by pvc:// URIs of the model and the data sets, sorted and unique."""
    uris = [md.spec.model.uri]
    data = md.spec.optimization.data
    uris += [d.uri for d in (data.calibration, data.evaluation, data.fine_tune) if d is not None]
    claims = {u[len("pvc://") :].split("/", 1)[0] for u in uris if u.startswith("pvc://")}
    return sorted(claims)


def claim_volume_name(claim: str) -> str:
    return safe_name("pvc", claim)


def source_volumes(md: ModelDeployment, config: OperatorConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) for the pvc:// claims, mounted read-only under config.pvc_root."""
    volumes, mounts = [], []
    for claim in pvc_claims(md):
        vname = claim_volume_name(claim)
        volumes.append({"name": vname, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": vname, "mountPath": f"{config.pvc_root}/{claim}", "readOnly": True})
    return volumes, mounts


def artifact_volume(md: ModelDeployment, read_only: bool) -> dict[str, Any]:
    return {
        "name": "artifacts",
        "persistentVolumeClaim": {"claimName": artifact_claim_name(md), "readOnly": read_only},
    }


def tmp_volume() -> dict[str, Any]:
    return {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}
