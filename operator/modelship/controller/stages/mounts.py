"""Before a stage Job is created, or the serving Deployment applied: every Secret, ConfigMap and
PersistentVolumeClaim its pod mounts by name must exist in its namespace, and every ConfigMap key it mounts as a
file (a CA bundle's) must be in that ConfigMap. Pure.

A missing one is ``SecretNotFound``, ``ConfigMapNotFound`` or ``ClaimNotFound`` (the first missing kind in the
order Secret, ConfigMap, claim gives the reason; the message names every missing object): the stage's condition
False and the resource Stalled (the user must create the object or fix the field), the message naming each
object, the field of the spec that names it and the namespace. No Job is created, so no pod waits in
ContainerCreating or Pending; no new Deployment template either, so the pods that serve keep serving. A missing
key is ``ConfigMapKeyNotFound``, after the missing objects. The stage looks again with a backoff (the operator
does not watch these kinds), and goes on by itself once the object exists. Which objects are missing is read by
``controller.prejob`` (existence only, as metadata: a Secret's data is never read; a ConfigMap whose keys are
mounted as files is read for its keys) into ``Observed.missing_mounts`` and ``Observed.missing_keys``.
"""

from __future__ import annotations

from types import MappingProxyType

from ...api.status import ConditionType, Reason, StageName
from ...resources.kinds import CONFIG_MAP, PERSISTENT_VOLUME_CLAIM, SECRET
from ...resources.mounted import MOUNTABLE, mounted_fields, mounted_key_fields, mounted_keys, mounted_objects
from ..conditions import seconds_since
from .context import Context, Effects, Failure, Manifest, condition

RECHECK_MIN_SECONDS = 5.0
RECHECK_MAX_SECONDS = 300.0

NOT_FOUND = MappingProxyType({
    SECRET.kind: Reason.SECRET_NOT_FOUND,
    CONFIG_MAP.kind: Reason.CONFIG_MAP_NOT_FOUND,
    PERSISTENT_VOLUME_CLAIM.kind: Reason.CLAIM_NOT_FOUND,
})  # fmt: skip
"""The reason of a missing object of each kind a pod mounts by name (``resources.mounted.MOUNTABLE``)."""
_NOUN = MappingProxyType({SECRET.kind: "Secret", CONFIG_MAP.kind: "ConfigMap", PERSISTENT_VOLUME_CLAIM.kind: "claim"})
_OPERATOR = "the operator configuration"


def missing_mounts(ctx: Context, manifest: Manifest, label: str) -> tuple[Reason, str] | None:
    """Why the pod of ``manifest`` (a Job, the serving Deployment) cannot start (an object it mounts is missing, or
    a key it mounts as a file): the reason and the message, or None when every one is there (as far as
    ``ctx.observed`` says)."""
    namespace = manifest["metadata"].get("namespace") or ctx.md.metadata.namespace or ""
    absent = ctx.observed.missing_mounts
    missing = [(kind, n) for kind, n in mounted_objects(manifest) if (kind, namespace, n) in absent]
    keys = [(cm, key) for cm, key in mounted_keys(manifest) if (namespace, cm, key) in ctx.observed.missing_keys]
    if not missing and not keys:
        return None
    order = [k.kind for k in MOUNTABLE]
    missing.sort(key=lambda ref: order.index(ref[0]))  # stable: each kind's objects in the manifest's order
    fields, key_fields = mounted_fields(ctx.md), mounted_key_fields(ctx.md)
    named = ["; ".join(f'{_NOUN[k]} "{n}" ({", ".join(fields.get((k, n), (_OPERATOR,)))})' for k, n in missing)
             + " not found"] if missing else []  # fmt: skip
    named += [f'key "{key}" ({", ".join(key_fields.get((cm, key), (_OPERATOR,)))}) not in ConfigMap "{cm}"'
              for cm, key in keys]  # fmt: skip
    reason = NOT_FOUND[missing[0][0]] if missing else Reason.CONFIG_MAP_KEY_NOT_FOUND
    claims = any(k == PERSISTENT_VOLUME_CLAIM.kind for k, _ in missing)
    return reason, (
        f"{'; '.join(named)} in namespace {namespace}: create it there or fix the field; the {label} starts once it "
        "exists" + (" (a claim being deleted does not count: no new pod can mount it)" if claims else "")
    )


def held(ctx: Context, stage: StageName, type_: ConditionType, absent: tuple[Reason, str]) -> Effects:
    """The stage held for a missing mounted object: its condition False with the reason, Stalled (the user must
    create the object or fix the field), and another look after ``recheck_after``."""
    reason, why = absent
    return Effects(
        (condition(type_, False, reason, why),),
        failure=Failure(stage, reason, why),
        requeue_after=recheck_after(ctx, type_),
    )


def recheck_after(ctx: Context, condition: ConditionType) -> float:
    """Seconds until the next look: as long as the stage has waited for the object (from its condition's
    lastTransitionTime), between RECHECK_MIN_SECONDS and RECHECK_MAX_SECONDS, so the looks double in spacing."""
    prev = ctx.prev.condition(condition)
    waiting = {r.value for r in (*NOT_FOUND.values(), Reason.CONFIG_MAP_KEY_NOT_FOUND)}
    if prev is None or prev.reason not in waiting:
        return RECHECK_MIN_SECONDS
    waited = seconds_since(prev.last_transition_time, ctx.now)
    if waited is None:
        return RECHECK_MIN_SECONDS  # a stamp that does not parse (a forged status): as at the first look
    return min(RECHECK_MAX_SECONDS, max(RECHECK_MIN_SECONDS, waited))
