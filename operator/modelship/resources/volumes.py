"""Volumes of the stage Jobs: the artifact claim, the claims named by pvc:// URIs, and each source's
credentials and CA as files."""

from __future__ import annotations

from typing import Any

from ..api.modeldeployment import ModelDeployment
from ..api.source import Credentials
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


SOURCES_MOUNT = "/var/run/modelship/sources"
PUSH_CREDENTIALS_MOUNT = "/var/run/modelship/push"
CREDENTIAL_FILE_MODE = 0o400


def source_roles(md: ModelDeployment) -> dict[str, Credentials | None]:
    """Each source of the spec by role (model, evaluation, calibration, fineTune) with its credentials."""
    data = md.spec.optimization.data
    roles: dict[str, Credentials | None] = {"model": md.spec.model.credentials}
    for role, ref in (("evaluation", data.evaluation), ("calibration", data.calibration), ("fineTune", data.fine_tune)):
        if ref is not None:
            roles[role] = ref.credentials
    return roles


def source_access(md: ModelDeployment) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(--sources-json value, volumes, mounts): each source's endpoint, its CA and its Secret as files, in a
    directory of its own (two Secrets with the same key names never overwrite each other). The Secret files are
    mode 0400 and mounted into the fetching container only."""
    config: dict[str, Any] = {}
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for role, creds in source_roles(md).items():
        entry: dict[str, str] = {}
        config[role] = entry  # listed even without credentials: then it has none (nothing from the environment)
        if creds is None:
            continue
        base = f"{SOURCES_MOUNT}/{role}"
        if creds.endpoint:
            entry["endpoint"] = creds.endpoint
        if creds.secret_ref is not None:
            vname = safe_name("src", role.lower(), "creds")
            volumes.append(
                {"name": vname, "secret": {"secretName": creds.secret_ref.name, "defaultMode": CREDENTIAL_FILE_MODE}}
            )
            mounts.append({"name": vname, "mountPath": f"{base}/credentials", "readOnly": True})
            entry["credentialsDir"] = f"{base}/credentials"
        if creds.ca_bundle_ref is not None:
            vname = safe_name("src", role.lower(), "ca")
            items = [{"key": creds.ca_bundle_ref.key, "path": "ca.crt"}]
            volumes.append({"name": vname, "configMap": {"name": creds.ca_bundle_ref.name, "items": items}})
            mounts.append({"name": vname, "mountPath": f"{base}/ca", "readOnly": True})
            entry["caFile"] = f"{base}/ca/ca.crt"
    return config, volumes, mounts
