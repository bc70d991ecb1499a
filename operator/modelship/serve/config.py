"""Server configuration: defaults, ``MODELSHIP_*`` environment variables, and the container's CPU and memory
limits (cgroup v2 or v1)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``modelship serve`` needs. ``workers``/``threads`` of 0 mean "from the CPU limit"; the byte
    limits of 0 mean "from the container's memory limit" (see :mod:`modelship.serve.limits`)."""

    model: str
    name: str | None = None
    model_version: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    metrics_port: int = 9090
    workers: int = 0
    threads: int = 0
    max_batch_size: int = 8
    batch_timeout_us: int = 500
    max_request_bytes: int = 0
    max_inflight_bytes: int = 0
    max_decoded_bytes: int = 0
    memory_limit_bytes: int = 0
    max_queue: int = 512
    max_connections: int = 1024
    request_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    min_upload_rate: int = 64 * 1024
    keepalive_timeout_s: float = 75.0
    drain_seconds: float = 5.0
    shutdown_timeout_s: float = 20.0
    switch_interval_us: int = 500
    """How long a thread running Python keeps the GIL while another thread waits for it (``sys.setswitchinterval``;
    Python's default is 5000). The event loop and the workers hand the GIL to each other on every request: at 5 ms
    a small request's answer could wait a whole interval (or two) behind a thread parsing or quantizing another."""
    log_level: str = "info"
    revision: str | None = None
    """The revision this server runs (the operator sets MODELSHIP_REVISION): every inference answer names it in
    the x-modelship-revision header."""
    mirror_config: str | None = None
    """Where to mirror a share of requests (a candidate revision): a JSON file, or an http:// URL serving it (a
    candidate's --mirror-offer); read again every second."""
    mirror_offer: str | None = None
    """This server is a candidate: the mirror settings (JSON) it offers at /mirror on its metrics port."""

    def resolved_workers(self) -> int:
        return self.workers if self.workers > 0 else available_cpus()

    def resolved_threads(self) -> int:
        if self.threads > 0:
            return self.threads
        return max(1, available_cpus() // self.resolved_workers())


#: field -> environment variable (flags win over the environment, the environment over defaults)
ENV_VARS: dict[str, str] = {f.name: "MODELSHIP_" + f.name.upper() for f in fields(ServeConfig)}

#: fields holding byte counts: they also take Kubernetes-style suffixes (``16Mi``, ``1G``)
BYTE_FIELDS = frozenset(
    {"max_request_bytes", "max_inflight_bytes", "max_decoded_bytes", "memory_limit_bytes", "min_upload_rate"}
)

_BYTE_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                  "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip
_BYTES = re.compile(r"^\s*([0-9]+)\s*(Ki|Mi|Gi|Ti|k|M|G|T)?\s*$")


def parse_bytes(raw: str | int) -> int:
    """``16777216``, ``16Mi`` or ``16M`` -> bytes. Raises ValueError for anything else."""
    if isinstance(raw, int):
        return raw
    m = _BYTES.match(raw)
    if m is None:
        raise ValueError(f"{raw!r} is not a byte count (an integer with an optional Ki/Mi/Gi or k/M/G suffix)")
    return int(m.group(1)) * _BYTE_SUFFIXES[m.group(2) or ""]


def _convert(name: str, raw: str, kind: Any) -> Any:
    if name in BYTE_FIELDS:
        return parse_bytes(raw)
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
                what = "byte count" if f.name in BYTE_FIELDS else f.type
                raise ValueError(f"{ENV_VARS[f.name]}={raw!r} is not a valid {what}") from None
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
        (0 <= cfg.metrics_port < 65536, "metrics port must be in 0..65535"),
        (cfg.metrics_port == 0 or cfg.metrics_port != cfg.port, "the metrics port must differ from the port"),
        (cfg.workers >= 0, "workers must be >= 0 (0 = one per CPU)"),
        (cfg.threads >= 0, "threads must be >= 0 (0 = CPUs / workers)"),
        (1 <= cfg.max_batch_size <= 4096, "max batch size must be in 1..4096"),
        (0 <= cfg.batch_timeout_us <= 10_000_000, "batch timeout must be in 0..10000000 microseconds"),
        *(
            (getattr(cfg, f) == 0 or getattr(cfg, f) >= 1000, f"{f.replace('_', ' ')} must be 0 (auto) or >= 1000")
            for f in ("max_request_bytes", "max_inflight_bytes", "max_decoded_bytes")
        ),
        (
            not (cfg.max_request_bytes and cfg.max_inflight_bytes) or cfg.max_request_bytes <= cfg.max_inflight_bytes,
            "max request bytes must not exceed max in-flight bytes (such a request could never be admitted)",
        ),
        (cfg.memory_limit_bytes >= 0, "memory limit bytes must be >= 0 (0 = from the cgroup)"),
        (1 <= cfg.max_queue <= 1_000_000, "max queue must be in 1..1000000"),
        (1 <= cfg.max_connections <= 1_000_000, "max connections must be in 1..1000000"),
        (cfg.request_timeout_s >= 0, "request timeout must be >= 0 (0 = none)"),
        (cfg.header_timeout_s > 0, "header timeout must be > 0"),
        (cfg.min_upload_rate >= 0, "min upload rate must be >= 0 (0 = none)"),
        (cfg.keepalive_timeout_s > 0, "keep-alive timeout must be > 0"),
        (cfg.drain_seconds >= 0, "drain seconds must be >= 0"),
        (cfg.shutdown_timeout_s >= 0, "shutdown timeout must be >= 0"),
        (50 <= cfg.switch_interval_us <= 100_000, "switch interval must be in 50..100000 microseconds"),
        (cfg.log_level.lower() in ("debug", "info", "warning", "error", "critical"), "unknown log level"),
        (
            cfg.revision is None or re.fullmatch(r"[A-Za-z0-9._-]{1,128}", cfg.revision) is not None,
            "revision must be 1-128 letters, digits, '.', '_' or '-'",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


# ---------------------------------------------------------------------------------------------
# CPU budget


def _cgroup_dirs(
    cgroup_root: str | os.PathLike[str], proc_self_cgroup: str, controller: str
) -> tuple[list[Path], list[Path]]:
    """Directories to look in for this process's cgroup: (v2 dirs, v1 dirs of ``controller``), most specific first."""
    root = Path(cgroup_root)
    names = (controller, "cpu,cpuacct") if controller == "cpu" else (controller,)
    v2: list[Path] = []
    v1: list[Path] = []
    try:
        for line in Path(proc_self_cgroup).read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _, controllers, rel = parts
            rel = rel.lstrip("/")
            if controllers == "":
                v2.append(root / rel)
            elif controller in controllers.split(","):
                v1.extend(root / c / rel for c in dict.fromkeys((controllers, *names)))
    except OSError:
        pass
    v2.append(root)
    v1.extend(root / c for c in names)
    return v2, v1


def cpu_limit(
    cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup", proc_self_cgroup: str = "/proc/self/cgroup"
) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None if unlimited."""
    v2_dirs, v1_dirs = _cgroup_dirs(cgroup_root, proc_self_cgroup, "cpu")
    for d in v2_dirs:
        try:
            quota, period = (d / "cpu.max").read_text().split()[:2]
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
    for d in v1_dirs:
        try:
            q = int((d / "cpu.cfs_quota_us").read_text())
            per = int((d / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if q > 0 and per > 0:
            return q / per
        return None
    return None


#: v1 reports "no limit" as a huge page-rounded number; anything above this is taken as unlimited
_V1_UNLIMITED = 1 << 60


def memory_limit(
    cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup", proc_self_cgroup: str = "/proc/self/cgroup"
) -> int | None:
    """Bytes allowed by the cgroup memory limit (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``), None if
    unlimited. The container's limit is what the kernel OOM-kills at."""
    v2_dirs, v1_dirs = _cgroup_dirs(cgroup_root, proc_self_cgroup, "memory")
    for d in v2_dirs:
        try:
            raw = (d / "memory.max").read_text().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        try:
            value = int(raw)
        except ValueError:
            continue
        return value if value > 0 else None
    for d in v1_dirs:
        try:
            value = int((d / "memory.limit_in_bytes").read_text())
        except (OSError, ValueError):
            continue
        return value if 0 < value < _V1_UNLIMITED else None
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
