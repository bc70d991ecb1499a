"""How to reach one source: its endpoint, an extra CA, and its credentials.

In a Pod, credentials are files: the source's Secret mounted read-only into the fetching container only (one file
per key), never environment variables, so nothing that prints the environment can leak them. On a laptop the
``modelship`` CLI may read the usual environment variables instead (``environment=True``).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FetchError

MAX_SECRET_BYTES = 64 * 1024


@dataclass(frozen=True)
class Access:
    """Endpoint, CA and credentials of one source (the model, or one data set)."""

    endpoint: str | None = None
    """Base URL of the storage service (S3-compatible endpoint, registry, MLflow tracking server)."""
    ca_file: Path | None = None
    """PEM bundle of extra CAs, trusted in addition to the system's."""
    credentials_dir: Path | None = None
    """A mounted Secret: one file per key."""
    environment: bool = False
    """Also read credentials from environment variables (the CLI outside a cluster; never in a Pod)."""
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def secret(self, *keys: str) -> str | None:
        """The first of ``keys`` found in the credentials directory (then the environment, when allowed)."""
        for key in keys:
            if self.credentials_dir is not None:
                path = self.credentials_dir / key
                if path.is_file():
                    try:
                        data = path.read_bytes()[: MAX_SECRET_BYTES + 1]
                    except OSError as exc:
                        raise FetchError(f"cannot read credential {key!r}: {exc.strerror or exc}") from None
                    if len(data) > MAX_SECRET_BYTES:
                        raise FetchError(f"credential {key!r} is larger than {MAX_SECRET_BYTES} bytes")
                    return data.decode("utf-8", "replace").strip()
            if self.environment and self.env.get(key):
                return self.env[key].strip()
        return None

    def ssl_context(self) -> ssl.SSLContext:
        """The system's trust store, plus ``ca_file`` when given (added, never replacing it)."""
        context = ssl.create_default_context()
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise FetchError(f"cannot load the CA bundle {self.ca_file}: {exc}") from None
        return context
