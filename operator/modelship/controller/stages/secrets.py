"""Before a stage Job is created: every Secret its pod mounts must exist in the Job's namespace. Pure.

A missing one is ``SecretNotFound``: the stage's condition False and the resource Stalled (the user must create
the Secret or fix the field), the message naming each Secret, the field of the spec that names it and the
namespace. No Job is created, so no pod waits in ContainerCreating. The stage looks again with a backoff (the
operator does not watch Secrets), and goes on by itself once the Secret exists. Which Secrets are missing is
read by ``controller.reconcile`` (existence only, as metadata: the Secret's data is never read) into
``Observed.missing_secrets``.
"""

from __future__ import annotations

from datetime import datetime

from ...api.status import ConditionType, Reason
from ...resources.secrets import mounted_secrets, secret_fields
from .context import Context, Manifest

RECHECK_MIN_SECONDS = 5.0
RECHECK_MAX_SECONDS = 300.0


def missing_secrets_message(ctx: Context, manifest: Manifest, label: str) -> str | None:
    """Why the Job ``manifest`` cannot start (a Secret it mounts is missing), or None when every one exists (as
    far as ``ctx.observed.missing_secrets`` says)."""
    namespace = manifest["metadata"].get("namespace") or ctx.md.metadata.namespace or ""
    missing = [n for n in mounted_secrets(manifest) if (namespace, n) in ctx.observed.missing_secrets]
    if not missing:
        return None
    fields = secret_fields(ctx.md)
    named = "; ".join(f'Secret "{n}" ({", ".join(fields.get(n, ("the operator configuration",)))})' for n in missing)
    return (
        f"{named} not found in namespace {namespace}: create it there or fix the field; the {label} starts once it "
        "exists"
    )


def recheck_after(ctx: Context, condition: ConditionType) -> float:
    """Seconds until the next look: as long as the stage has waited for the Secret (from its condition's
    lastTransitionTime), between RECHECK_MIN_SECONDS and RECHECK_MAX_SECONDS, so the looks double in spacing."""
    prev = next((c for c in ctx.prev.conditions if c.type == condition.value), None)
    if prev is None or prev.reason != Reason.SECRET_NOT_FOUND.value or not prev.last_transition_time:
        return RECHECK_MIN_SECONDS
    since = datetime.fromisoformat(prev.last_transition_time.replace("Z", "+00:00"))
    waited = (ctx.now - since).total_seconds()
    return min(RECHECK_MAX_SECONDS, max(RECHECK_MIN_SECONDS, waited))
