"""Which Secrets a stage Job's pod mounts, and which fields of the spec name them. Pure.

The kubelet does not start a pod whose Secret volume names a Secret that does not exist: the pod waits in
ContainerCreating, and the Job never says why. The operator reads the names from the Job manifest it is about
to create (so the check always covers exactly what the pod would mount) and asks the API server whether each
exists (``controller.reconcile``); the field paths let the condition say what to fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..api.modeldeployment import ModelDeployment
from .volumes import source_roles


def mounted_secrets(manifest: dict[str, Any]) -> tuple[str, ...]:
    """Names of the Secrets the pod template of a Job (or of any pod-owning manifest) mounts as volumes, in
    order, each once: ``volumes[].secret.secretName`` and the Secrets of ``projected`` volumes."""
    template = ((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}
    names: dict[str, None] = {}
    for volume in template.get("volumes") or []:
        secret = volume.get("secret")
        if secret and secret.get("secretName"):
            names[secret["secretName"]] = None
        for source in (volume.get("projected") or {}).get("sources") or []:
            projected = source.get("secret")
            if projected and projected.get("name"):
                names[projected["name"]] = None
    return tuple(names)


def _fields(md: ModelDeployment) -> Iterator[tuple[str, str]]:
    for role, creds in source_roles(md).items():
        if creds is not None and creds.secret_ref is not None:
            prefix = "spec.model" if role == "model" else f"spec.optimization.data.{role}"
            yield creds.secret_ref.name, f"{prefix}.credentials.secretRef.name"
    push = md.spec.build.push_secret_ref
    if push is not None:
        yield push.name, "spec.build.pushSecretRef.name"


def secret_fields(md: ModelDeployment) -> dict[str, tuple[str, ...]]:
    """Secret name -> the fields of the spec that name it (one Secret may serve several sources)."""
    out: dict[str, tuple[str, ...]] = {}
    for name, field in _fields(md):
        out[name] = (*out.get(name, ()), field)
    return out
