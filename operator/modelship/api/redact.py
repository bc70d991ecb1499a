"""What may reach status, Events and termination messages: error texts without credentials, bounded.

Errors travel from a stage's pod (its termination message, or the tail of its log) into ``status.lastFailure``,
condition messages and Events, which anyone who can read the ModelDeployment (dashboards, GitOps tools, support
bundles) sees. ``redact`` removes what must not travel: the values the process knows to be secret (the pod's
credential files and secret-looking environment variables, passed in by the caller), URLs' userinfo, secret-looking
``key=value`` pairs and headers, bearer tokens, cloud access key ids and PEM private keys; then it collapses the text
to one line and bounds its length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
DEFAULT_LIMIT = 1024
MIN_SECRET_LENGTH = 6
"""Known secret values shorter than this are not searched for (they would redact ordinary words)."""

SECRET_NAME = re.compile(r"(?i)(secret|token|passw|pwd|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth)")
"""A variable or key name whose value is a secret."""

_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"]+@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_PAIR = re.compile(
    r"(?i)([\"']?[\w.-]*(?:secret|token|passw|pwd|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth)"
    r"[\w.-]*[\"']?\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;}\])]+)"
)
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


def redact(text: str, secrets: Iterable[str] = (), limit: int = DEFAULT_LIMIT) -> str:
    """``text`` without the given secret values and anything that looks like a credential, on one line, at most
    ``limit`` characters."""
    out = text
    for value in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        out = out.replace(value, REDACTED)
    out = _PEM.sub(REDACTED, out)
    out = _USERINFO.sub(rf"\1{REDACTED}@", out)
    out = _BEARER.sub(rf"\1 {REDACTED}", out)
    out = _PAIR.sub(rf"\1{REDACTED}", out)
    out = _AWS_KEY_ID.sub(REDACTED, out)
    out = " ".join(out.split())
    if len(out) > limit:
        out = out[: max(0, limit - 3)].rstrip() + "..."
    return out
