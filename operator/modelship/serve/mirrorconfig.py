"""The mirror settings (``--mirror-config``, ``--mirror-offer``): where to mirror, how much, and how the two answers
are compared; parsed and checked from their JSON."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

COMPARISONS = ("auto", "top1", "tolerance")


@dataclass(frozen=True)
class MirrorConfig:
    """Where and how much to mirror (the mirror file's content)."""

    url: str
    """http://host:port of the candidate (its Service)."""
    percent: float
    candidate: str
    """The candidate's revision (the metrics' label)."""
    comparison: str = "auto"
    rtol: float = 0.05
    atol: float = 0.01
    timeout_s: float = 5.0

    @functools.cached_property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or 80

    @functools.cached_property
    def heads(self) -> dict[tuple[str, str, tuple[tuple[str, str], ...]], bytes]:
        """Request heads already formatted, by (method, path, headers): a server sees few distinct ones."""
        return {}


def parse_config(raw: bytes) -> MirrorConfig | None:
    """The mirror file's JSON; None when it turns mirroring off. ValueError names what is wrong."""
    doc = orjson.loads(raw) if raw.strip() else {}
    if not isinstance(doc, dict):
        raise ValueError("the mirror file must hold a JSON object")
    percent = float(doc.get("percent") or 0)
    if not doc.get("url") or percent <= 0:
        return None
    url = str(doc["url"])
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"url {url!r} is not http://host:port")
    if not 0 < percent <= 100:
        raise ValueError(f"percent {percent} is not in (0, 100]")
    comparison = str(doc.get("comparison") or "auto").lower()
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison {comparison!r} is not one of {', '.join(COMPARISONS)}")
    return MirrorConfig(
        url=url,
        percent=percent,
        candidate=str(doc.get("candidate") or "candidate")[:128],
        comparison=comparison,
        rtol=float(doc.get("rtol", 0.05)),
        atol=float(doc.get("atol", 0.01)),
        timeout_s=min(60.0, max(0.1, float(doc.get("timeoutSeconds", 5.0)))),
    )
