"""The API server's Status object an API error carries (its message, reason, details and causes)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException


def status_body(exc: ApiException) -> dict[str, Any] | None:
    """The JSON object an API error's body holds (the API server's Status), None when it holds none."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return None
    return body if isinstance(body, dict) else None
