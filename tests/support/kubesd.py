"""What Prometheus' kubernetes_sd_configs (role: pod) discovers for a pod, as file_sd target groups: the test build
of Prometheus (hack/servers/build-prometheus, ``-tags remove_all_sd``) has no kubernetes_sd, so a scrape job's
relabel_configs meet the same ``__meta_kubernetes_*`` labels through ``file_sd_configs``.

Follows discovery/kubernetes/pod.go of Prometheus 3.x: the pod's group carries the namespace, the pod's own
fields, one ``label_``/``labelpresent_`` and ``annotation_``/``annotationpresent_`` pair per label and annotation
(names sanitized to ``[a-zA-Z0-9_]``); each declared container port is one target (``__address__`` = pod IP and
port) with its container's labels; a container without ports is one target at the bare pod IP."""

from __future__ import annotations

import re
from typing import Any

PREFIX = "__meta_kubernetes_pod_"


def sanitize(name: str) -> str:
    """strutil.SanitizeLabelName: every character outside [a-zA-Z0-9_] becomes '_'."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _join(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def pod_target_groups(pod: dict[str, Any], namespace: str, ip: str, node: str = "node-0") -> list[dict[str, Any]]:
    """``pod`` (a manifest: metadata and spec, e.g. a Deployment's template with a name) running at ``ip``, as the
    target groups a file_sd file holds."""
    meta, spec = pod["metadata"], pod["spec"]
    group: dict[str, str] = {
        "__meta_kubernetes_namespace": namespace,
        PREFIX + "name": meta["name"],
        PREFIX + "ip": ip,
        PREFIX + "ready": "true",
        PREFIX + "phase": "Running",
        PREFIX + "node_name": node,
        PREFIX + "host_ip": "10.0.0.1",
        PREFIX + "uid": meta.get("uid", f"uid-{meta['name']}"),
    }
    for kind, values in (("label", meta.get("labels") or {}), ("annotation", meta.get("annotations") or {})):
        for key, value in values.items():
            group[f"{PREFIX}{kind}_{sanitize(key)}"] = value
            group[f"{PREFIX}{kind}present_{sanitize(key)}"] = "true"
    out: list[dict[str, Any]] = []
    for init, containers in ((False, spec.get("containers") or []), (True, spec.get("initContainers") or [])):
        for c in containers:
            common = {
                PREFIX + "container_name": c["name"],
                PREFIX + "container_image": c.get("image", ""),
                PREFIX + "container_init": str(init).lower(),
            }
            ports = c.get("ports") or []
            if not ports:
                out.append({"targets": [ip], "labels": {**group, **common}})
            for p in ports:
                labels = {
                    **group,
                    **common,
                    PREFIX + "container_port_name": p.get("name", ""),
                    PREFIX + "container_port_number": str(p["containerPort"]),
                    PREFIX + "container_port_protocol": p.get("protocol", "TCP"),
                }
                out.append({"targets": [_join(ip, p["containerPort"])], "labels": labels})
    return out
