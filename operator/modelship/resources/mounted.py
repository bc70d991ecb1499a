"""Which objects a stage Job's pod mounts by name (Secrets, ConfigMaps, PersistentVolumeClaims), and which fields
of the spec name them. Pure.

The kubelet does not start a pod whose volume names a Secret or ConfigMap that does not exist (unless the volume
says ``optional``), and the scheduler does not place one whose claim does not exist: the pod waits in
ContainerCreating or Pending, and the Job never says why. The operator reads the names from the Job manifest it is
about to create (so the check always covers exactly what the pod would mount) and asks the API server whether each
exists (``controller.reconcile``); the field paths let the condition say what to fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..api.modeldeployment import ModelDeployment
from .kinds import CONFIG_MAP, PERSISTENT_VOLUME_CLAIM, SECRET, Kind
from .meta import artifact_claim_name
from .volumes import source_roles

MOUNTABLE: tuple[Kind, ...] = (SECRET, CONFIG_MAP, PERSISTENT_VOLUME_CLAIM)
"""The kinds a pod mounts by name, in the order a condition names them."""

Mounted = tuple[str, str]
"""(kind, name) of an object a pod mounts."""


def _volume_refs(volume: dict[str, Any]) -> Iterator[Mounted]:
    secret = volume.get("secret")
    if secret and secret.get("secretName") and not secret.get("optional"):
        yield SECRET.kind, secret["secretName"]
    config_map = volume.get("configMap")
    if config_map and config_map.get("name") and not config_map.get("optional"):
        yield CONFIG_MAP.kind, config_map["name"]
    claim = volume.get("persistentVolumeClaim")
    if claim and claim.get("claimName"):
        yield PERSISTENT_VOLUME_CLAIM.kind, claim["claimName"]
    for source in (volume.get("projected") or {}).get("sources") or []:
        for key, kind in (("secret", SECRET), ("configMap", CONFIG_MAP)):
            projected = source.get(key)
            if projected and projected.get("name") and not projected.get("optional"):
                yield kind.kind, projected["name"]


def mounted_objects(manifest: dict[str, Any]) -> tuple[Mounted, ...]:
    """(kind, name) of each Secret, ConfigMap and claim the pod template of a Job (or of any pod-owning manifest)
    mounts as a volume, in order, each once: ``secret``, ``configMap`` and ``persistentVolumeClaim`` volumes and
    the Secrets and ConfigMaps of ``projected`` ones. An ``optional`` Secret or ConfigMap does not hold the pod
    back, so it is not listed."""
    template = ((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}
    names: dict[Mounted, None] = {}
    for volume in template.get("volumes") or []:
        names.update(dict.fromkeys(_volume_refs(volume)))
    return tuple(names)


def mounted(manifest: dict[str, Any], kind: Kind) -> tuple[str, ...]:
    """Names of the objects of ``kind`` the pod template of ``manifest`` mounts (``mounted_objects``)."""
    return tuple(name for k, name in mounted_objects(manifest) if k == kind.kind)


def _source_prefix(role: str) -> str:
    return "spec.model" if role == "model" else f"spec.optimization.data.{role}"


def _fields(md: ModelDeployment) -> Iterator[tuple[Mounted, str]]:
    for role, creds in source_roles(md).items():
        if creds is not None and creds.secret_ref is not None:
            yield (SECRET.kind, creds.secret_ref.name), f"{_source_prefix(role)}.credentials.secretRef.name"
        if creds is not None and creds.ca_bundle_ref is not None:
            yield (CONFIG_MAP.kind, creds.ca_bundle_ref.name), f"{_source_prefix(role)}.credentials.caBundleRef.name"
    push = md.spec.build.push_secret_ref
    if push is not None:
        yield (SECRET.kind, push.name), "spec.build.pushSecretRef.name"
    code = md.spec.optimization.metric.code_ref
    if code is not None:
        yield (CONFIG_MAP.kind, code.name), "spec.optimization.metric.codeRef.name"
    data = md.spec.optimization.data
    uris = [("model", md.spec.model.uri)]
    uris += [(role, ref.uri) for role, ref in (("evaluation", data.evaluation), ("calibration", data.calibration),
                                               ("fineTune", data.fine_tune)) if ref is not None]  # fmt: skip
    for role, uri in uris:
        if uri.startswith("pvc://"):
            yield (PERSISTENT_VOLUME_CLAIM.kind, uri[len("pvc://") :].split("/", 1)[0]), f"{_source_prefix(role)}.uri"
    yield (PERSISTENT_VOLUME_CLAIM.kind, artifact_claim_name(md)), "the artifact claim the operator creates"


def mounted_fields(md: ModelDeployment) -> dict[Mounted, tuple[str, ...]]:
    """(kind, name) -> the fields of the spec that name it (one object may serve several sources)."""
    out: dict[Mounted, tuple[str, ...]] = {}
    for ref, field in _fields(md):
        if field not in out.get(ref, ()):
            out[ref] = (*out.get(ref, ()), field)
    return out
