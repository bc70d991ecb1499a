"""Server configuration: defaults, ``MODELSHIP_*`` environment variables, and the container's CPU budget."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``modelship serve`` needs. ``workers``/``threads`` of 0 mean "from the CPU limit"."""

    model: str
    name: str | None = None
    model_version: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 0
    threads: int = 0
    max_batch_size: int = 8
    batch_timeout_us: int = 500
    max_request_bytes: int = 64 * 1024 * 1024
    request_timeout_s: float = 60.0
    keepalive_timeout_s: float = 75.0
    drain_seconds: float = 5.0
    shutdown_timeout_s: float = 20.0
    log_level: str = "info"

    def resolved_workers(self) -> int:
        return self.workers if self.workers > 0 else available_cpus()

    def resolved_threads(self) -> int:
        if self.threads > 0:
            return self.threads
        return max(1, available_cpus() // self.resolved_workers())


#: field -> environment variable (flags win over the environment, the environment over defaults)
ENV_VARS: dict[str, str] = {f.name: "MODELSHIP_" + f.name.upper() for f in fields(ServeConfig)}


def _convert(name: str, raw: str, kind: Any) -> Any:
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        return float(raw)
    return raw


def config_from(values: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ServeConfig:
    """Merge explicit values (None = unset) with ``MODELSHIP_*`` variables and defaults.

    Raises ValueError naming the variable when an environment value does not parse.
    """
    env = os.environ if env is None else env
    kwargs: dict[str, Any] = {}
    for f in fields(ServeConfig):
        value = values.get(f.name)
        if value is None and ENV_VARS[f.name] in env and env[ENV_VARS[f.name]] != "":
            raw = env[ENV_VARS[f.name]]
            if f.name == "port" and not raw.isdigit():
                # Kubernetes injects MODELSHIP_PORT=tcp://ip:port for a Service named "modelship"; ignore it.
                continue
            try:
                value = _convert(f.name, raw, f.type)
            except ValueError:
                raise ValueError(f"{ENV_VARS[f.name]}={raw!r} is not a valid {f.type}") from None
        if value is not None:
            kwargs[f.name] = value
    if "model" not in kwargs:
        raise ValueError(f"no model given: pass --model or set {ENV_VARS['model']}")
    cfg = ServeConfig(**kwargs)
    _validate(cfg)
    return cfg


def _validate(cfg: ServeConfig) -> None:
    checks = [
        (0 < cfg.port < 65536 or cfg.port == 0, "port must be in 0..65535"),
        (cfg.workers >= 0, "workers must be >= 0 (0 = one per CPU)"),
        (cfg.threads >= 0, "threads must be >= 0 (0 = CPUs / workers)"),
        (1 <= cfg.max_batch_size <= 4096, "max batch size must be in 1..4096"),
        (0 <= cfg.batch_timeout_us <= 10_000_000, "batch timeout must be in 0..10000000 microseconds"),
        (cfg.max_request_bytes >= 1024, "max request bytes must be at least 1024"),
        (cfg.request_timeout_s >= 0, "request timeout must be >= 0 (0 = none)"),
        (cfg.keepalive_timeout_s > 0, "keep-alive timeout must be > 0"),
        (cfg.drain_seconds >= 0, "drain seconds must be >= 0"),
        (cfg.shutdown_timeout_s >= 0, "shutdown timeout must be >= 0"),
        (cfg.log_level.lower() in ("debug", "info", "warning", "error", "critical"), "unknown log level"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


# ---------------------------------------------------------------------------------------------
# CPU budget


def cpu_limit(
    cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup", proc_self_cgroup: str = "/proc/self/cgroup"
) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None if unlimited."""
    root = Path(cgroup_root)
    v2_paths: list[Path] = []
    v1_paths: list[Path] = []
    try:
        for line in Path(proc_self_cgroup).read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _, controllers, rel = parts
            rel = rel.lstrip("/")
            if controllers == "":
                v2_paths.append(root / rel / "cpu.max")
            elif "cpu" in controllers.split(","):
                v1_paths.extend(root / c / rel for c in (controllers, "cpu", "cpu,cpuacct"))
    except OSError:
        pass
    v2_paths.append(root / "cpu.max")
    v1_paths.extend([root / "cpu", root / "cpu,cpuacct"])
    for p in v2_paths:
        try:
            quota, period = p.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota == "max":
            return None
        try:
            q, per = int(quota), int(period)
        except ValueError:
            continue
        if q > 0 and per > 0:
            return q / per
    for d in v1_paths:
        try:
            q = int((d / "cpu.cfs_quota_us").read_text())
            per = int((d / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if q > 0 and per > 0:
            return q / per
        return None
    return None


def available_cpus(limit: float | None = None, *, detect: bool = True) -> int:
    """Whole CPUs this process may use: min(affinity, floor(cgroup quota)), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    if limit is None and detect:
        limit = cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.floor(limit + 1e-9)))
    return max(1, n)
