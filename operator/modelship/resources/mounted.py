"""Which objects the pod of a stage Job or of the serving Deployment mounts by name (Secrets, ConfigMaps,
PersistentVolumeClaims, as volumes or as environment), which ConfigMap keys it mounts as files, and which fields of
the spec name them. Pure.

The kubelet does not start a pod whose volume names a Secret or ConfigMap that does not exist (unless the volume
says ``optional``), and the scheduler does not place one whose claim does not exist: the pod waits in
ContainerCreating or Pending, and the Job never says why. The operator reads the names from the Job manifest it is
about to create (so the check always covers exactly what the pod would mount) and asks the API server whether each
exists (``controller.prejob``); the field paths let the condition say what to fix. A ConfigMap volume that lists
``items`` (a CA bundle's key) fails to mount when the ConfigMap lacks one of those keys: those keys are listed too,
so the check can read that ConfigMap's keys (never a Secret's).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..api.modeldeployment import ModelDeployment
from .kinds import CONFIG_MAP, PERSISTENT_VOLUME_CLAIM, SECRET, Kind
from .meta import artifact_claim_name
from .volumes import source_roles

MOUNTABLE: tuple[Kind, ...] = (SECRET, CONFIG_MAP, PERSISTENT_VOLUME_CLAIM)
"""The kinds a pod mounts by name, in the order a condition names them."""

Mounted = tuple[str, str]
"""(kind, name) of an object a pod mounts."""
MountedKey = tuple[str, str]
"""(ConfigMap name, key) of a key a pod mounts as a file."""


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


def _env_refs(container: dict[str, Any]) -> Iterator[Mounted]:
    for source in container.get("envFrom") or []:
        for key, kind in (("secretRef", SECRET), ("configMapRef", CONFIG_MAP)):
            ref = source.get(key)
            if ref and ref.get("name") and not ref.get("optional"):
                yield kind.kind, ref["name"]
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        for key, kind in (("secretKeyRef", SECRET), ("configMapKeyRef", CONFIG_MAP)):
            ref = value_from.get(key)
            if ref and ref.get("name") and not ref.get("optional"):
                yield kind.kind, ref["name"]


def _pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = ((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}
    return spec


def mounted_objects(manifest: dict[str, Any]) -> tuple[Mounted, ...]:
    """(kind, name) of each Secret, ConfigMap and claim the pod template of a Job, a Deployment (any pod-owning
    manifest) mounts, in order, each once: ``secret``, ``configMap`` and ``persistentVolumeClaim`` volumes, the
    Secrets and ConfigMaps of ``projected`` ones, and those its containers' ``envFrom`` and ``env`` ``valueFrom``
    name (the kubelet does not start a container whose environment names a missing one). An ``optional`` Secret
    or ConfigMap does not hold the pod back, so it is not listed."""
    template = _pod_spec(manifest)
    names: dict[Mounted, None] = {}
    for volume in template.get("volumes") or []:
        names.update(dict.fromkeys(_volume_refs(volume)))
    for container in [*(template.get("initContainers") or []), *(template.get("containers") or [])]:
        names.update(dict.fromkeys(_env_refs(container)))
    return tuple(names)


def mounted_keys(manifest: dict[str, Any]) -> tuple[MountedKey, ...]:
    """(ConfigMap name, key) of each key a non-optional ``configMap`` volume (or projected source) of the pod
    template lists in ``items``: the kubelet fails the mount when the ConfigMap lacks it. Secrets' keys are not
    listed: the operator never reads a Secret's data."""
    keys: dict[MountedKey, None] = {}
    for volume in _pod_spec(manifest).get("volumes") or []:
        sources = [volume.get("configMap")]
        sources += [s.get("configMap") for s in (volume.get("projected") or {}).get("sources") or []]
        for cm in sources:
            if cm and cm.get("name") and not cm.get("optional"):
                keys.update(dict.fromkeys((cm["name"], item["key"]) for item in cm.get("items") or []))
    return tuple(keys)


def mounted(manifest: dict[str, Any], kind: Kind) -> tuple[str, ...]:
    """Names of the objects of ``kind`` the pod template of ``manifest`` mounts (``mounted_objects``)."""
    return tuple(name for k, name in mounted_objects(manifest) if k == kind.kind)


def _source_prefix(role: str) -> str:
    return "spec.model" if role == "model" else f"spec.optimization.data.{role}"


def _key_fields(md: ModelDeployment) -> Iterator[tuple[MountedKey, str]]:
    for role, creds in source_roles(md).items():
        if creds is not None and creds.ca_bundle_ref is not None:
            ref = creds.ca_bundle_ref
            yield (ref.name, ref.key), f"{_source_prefix(role)}.credentials.caBundleRef.key"


def _by_ref(pairs: Iterable[tuple[tuple[str, str], str]]) -> dict[tuple[str, str], tuple[str, ...]]:
    """ref -> the fields that name it, each once, in the order first seen."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for ref, field in pairs:
        if field not in out.get(ref, ()):
            out[ref] = (*out.get(ref, ()), field)
    return out


def mounted_key_fields(md: ModelDeployment) -> dict[MountedKey, tuple[str, ...]]:
    """(ConfigMap name, key) -> the fields of the spec that name the key (a CA bundle's ``caBundleRef.key``)."""
    return _by_ref(_key_fields(md))


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
    artifacts = "the artifact claim, which held the optimized artifacts"
    yield (PERSISTENT_VOLUME_CLAIM.kind, artifact_claim_name(md)), artifacts


def mounted_fields(md: ModelDeployment) -> dict[Mounted, tuple[str, ...]]:
    """(kind, name) -> the fields of the spec that name it (one object may serve several sources)."""
    return _by_ref(_fields(md))
