"""The platform's admin policy applied by the operator to one ModelDeployment (``api.policy``): the same rules the
chart's ValidatingAdmissionPolicy enforces at admission, for when that policy is missing (an admin deleted it, or
the spec was stored before the policy tightened)."""

from __future__ import annotations

from ..api.modeldeployment import ModelDeployment
from ..api.policy import violations
from ..config import OperatorConfig


class PolicyViolation(ValueError):
    """The spec sets what the platform's policy forbids; the message names each field."""


def enforce_policy(md: ModelDeployment, config: OperatorConfig) -> None:
    """Raise PolicyViolation naming every field of ``md``'s spec (as written, before the operator's defaults) that
    breaks the policy."""
    broken = violations(md.spec.wire(), md.metadata.namespace or "", config.policy)
    if broken:
        raise PolicyViolation("; ".join(broken))
