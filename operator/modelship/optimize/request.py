"""What the optimizer is asked to do: the model, the optimization, where results go, and how to measure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import fetch as fetching
from ..api.optimization import Optimization
from ..api.source import ModelFormat


@dataclass
class Request:
    """What to optimize, with what, and where the results go."""

    model: str
    """Model URI or local path."""
    optimization: Optimization
    out_dir: Path
    model_format: ModelFormat | None = None
    """None: inferred from the name, then the content."""
    digest: str | None = None
    """Pinned sha256:<hex>; a mismatch fails before anything else runs."""
    pvc_root: str = fetching.DEFAULT_PVC_ROOT
    sources: fetching.Sources = field(default_factory=fetching.Sources)
    """Endpoint, CA and credentials of each source (model, evaluation, calibration, fineTune)."""
    work_dir: Path | None = None
    """Where remote models and data are downloaded (a temporary directory when None)."""
    seed: int = 0
    threads: int = 1
    """Interpreter threads for latency and throughput."""
    speed_seconds: float = 1.0
    """Time spent measuring latency per model variant."""
    revision: str | None = None
    allow_code: bool = False
    """Run what the model or a custom metric carries as Python (spec.model.allowCode); else refused."""

    def fetch(self, role: str, uri: str, dest: Path, digest: str | None = None) -> fetching.Fetched:
        """Fetch the model or a data set (``role``: model, evaluation, calibration, fineTune) with that source's
        endpoint, CA and credentials; a FetchError names the spec field."""
        return self.sources.fetch(role, uri, dest, pvc_root=self.pvc_root, digest=digest)
