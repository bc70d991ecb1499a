"""The revision caches as the operator holds them: one ConfigMap per tenant namespace in the operator's own
namespace (``controller.revcache`` says why and what an entry is), read once per tenant namespace and then kept
in memory (the operator is their only writer), written with a resourceVersion precondition."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..config import OperatorConfig
from ..resources.kinds import CONFIG_MAP
from . import metrics, revcache
from .kube import Kube, PreconditionFailed

log = logging.getLogger("modelship.revisions")

WRITE_TRIES = 3


class RevisionCaches:
    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube = kube
        self.config = config
        self._lock = threading.Lock()
        self._maps: dict[str, dict[str, Any] | None] = {}
        """tenant namespace -> its cache ConfigMap as last read or written (None: there is none)."""

    @property
    def enabled(self) -> bool:
        return self.config.operator_namespace is not None

    def _read(self, tenant: str) -> dict[str, Any] | None:
        assert self.config.operator_namespace is not None
        cm = self.kube.get(CONFIG_MAP.api_version, CONFIG_MAP.kind, self.config.operator_namespace,
                           revcache.configmap_name(tenant))  # fmt: skip
        metrics.API_READS.labels(CONFIG_MAP.kind).inc()
        self._maps[tenant] = cm
        return cm

    def get(self, tenant: str, revision: str) -> str | None:
        """The raw entry of ``revision`` in ``tenant``'s cache, if any."""
        if not self.enabled:
            return None
        with self._lock:
            cm = self._maps[tenant] if tenant in self._maps else self._read(tenant)
        value = ((cm or {}).get("data") or {}).get(revision)
        return str(value) if value is not None else None

    def put(self, tenant: str, revision: str, value: str) -> None:
        """Write ``revision``'s entry, evicting the least recently used ones past the bounds."""
        if not self.enabled:
            return
        assert self.config.operator_namespace is not None
        name = revcache.configmap_name(tenant)
        with self._lock:
            cm = self._maps[tenant] if tenant in self._maps else self._read(tenant)
            for attempt in range(1, WRITE_TRIES + 1):
                data = (cm or {}).get("data") or {}
                patch = revcache.put(data, revision, value, max_entries=self.config.revision_cache_entries,
                                     max_bytes=self.config.revision_cache_bytes)  # fmt: skip
                if not patch:
                    return
                rv = (cm or {}).get("metadata", {}).get("resourceVersion") if cm is not None else None
                try:
                    cm = self.kube.write_configmap(self.config.operator_namespace, name, revcache.labels(tenant),
                                                   patch, rv)  # fmt: skip
                except PreconditionFailed:
                    if attempt == WRITE_TRIES:
                        raise
                    cm = self._read(tenant)
                    continue
                metrics.API_WRITES.labels("patch" if rv else "create", CONFIG_MAP.kind).inc()
                evicted = sum(1 for v in patch.values() if v is None)
                if evicted:
                    log.info("revision cache of %s: %d least recently used entries evicted", tenant, evicted)
                self._maps[tenant] = cm
                return
