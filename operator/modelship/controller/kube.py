"""The operator's only door to the API server: server-side apply, create, delete, status patch, events.

Plain REST over the official client's ApiClient (no discovery round-trips), one field manager for everything.
Every request has a connect and a read timeout: a half-open connection fails the reconcile (retried by the work
queue) instead of blocking a worker forever.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException

from .. import FIELD_MANAGER, own_entry
from ..resources import kinds
from .apistatus import status_body
from .metrics import API_SECONDS, EVENTS_DROPPED
from .terminating import TerminatingNamespaces, refused_as_terminating

log = logging.getLogger(__name__)


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """REST path of a kind from the kinds table (``modelship.resources.kinds``)."""
    row = kinds.kind(kind)
    if row.api_version != api_version:
        raise ValueError(f"{kind} is {row.api_version} in the kinds table, not {api_version}")
    return row.path(namespace, name)


class PreconditionFailed(Exception):
    """The object changed between the operator's read and its write (deleted, or another object took the name):
    nothing was written; the next reconcile reads it again and judges who controls it."""


class Unreachable(ConnectionError):
    """No answer from the API server (connect or read timeout, connection refused or reset)."""


class TooLarge(ValueError):
    """An answer longer than the caller would read: not parsed (the connection is dropped)."""


METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
"""Accept header of a read that returns the object's metadata only."""
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 30.0


def api_client(connections: int) -> client.ApiClient:
    """A client of the API server the operator runs against (its Pod's service account, else the kubeconfig),
    keeping up to ``connections`` connections open."""
    try:
        kconfig.load_incluster_config()  # type: ignore[no-untyped-call]
    except kconfig.ConfigException:
        kconfig.load_kube_config()  # type: ignore[no-untyped-call]
    conf = client.Configuration.get_default_copy()
    conf.connection_pool_maxsize = connections
    return client.ApiClient(conf)


def _read_at_most(response: Any, max_bytes: int, what: str) -> bytes:
    """The body of a urllib3 response (not preloaded) if it has at most ``max_bytes``; else ``TooLarge``, the rest
    left unread and the connection closed (it cannot serve another request)."""
    try:
        data: bytes = response.read(max_bytes + 1) or b""
        if len(data) > max_bytes:
            response.close()
            raise TooLarge(f"{what}: the answer is longer than {max_bytes} bytes")
        return data
    finally:
        response.release_conn()


@dataclass
class Kube:
    api: client.ApiClient
    timeout: tuple[float, float] = (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
    """(connect, read) seconds of every request."""

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        if body is not None and not content_type.endswith("json"):
            body = json.dumps(body)  # JSON is YAML: send apply configurations pre-serialized
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": accept},
            body=body,
            auth_settings=["BearerToken"],
        )
        started = time.monotonic()
        try:
            response = self.api.call_api(*params, _request_timeout=self.timeout)
            if max_bytes is None:
                data = response.read() or b""  # type: ignore[no-untyped-call]
            else:
                data = _read_at_most(response.response, max_bytes, f"{method} {path}")
        except TooLarge:
            raise
        except Exception as exc:  # the transport's errors (timeouts, resets, refused): no answer at all
            raise Unreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        API_SECONDS.labels(method).observe(time.monotonic() - started)
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason, body=data.decode(errors="replace"))
        if not data:
            return {}
        result = json.loads(data)
        return result if isinstance(result, dict) else {}

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the API server has it now; None when there is none."""
        try:
            obj = self._call("GET", resource_path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        return obj

    def exists(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Whether the object exists, asked for its metadata only (PartialObjectMetadata): for a Secret, its data
        never leaves the API server."""
        return self.metadata(api_version, kind, namespace, name) is not None

    def metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object's metadata only (PartialObjectMetadata: ``{"metadata": {...}}``), None when there is none."""
        try:
            return self._call("GET", resource_path(api_version, kind, namespace, name), accept=METADATA_ONLY)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def serves(self, row: kinds.Kind) -> bool:
        """Whether the API server serves ``row``'s resource (discovery of its group version): a kind from a CRD
        that is not installed is not."""
        return row.plural in self.discover(row.group, row.version)

    def discover(self, group: str, version: str) -> dict[str, frozenset[str]]:
        """The resources discovery serves in one group version (one GET), plural -> verbs, subresources left out;
        empty when the group version is not served (its CRDs are not installed)."""
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            found = self._call("GET", base)
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return {
            r["name"]: frozenset(r.get("verbs") or ())
            for r in found.get("resources") or []
            if isinstance(r.get("name"), str) and "/" not in r["name"]
        }

    def apply(self, obj: dict[str, Any], uid: str, manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply under the operator's field manager (force: the fields are ours) of an object the
        caller judged ours, with its uid as precondition: if the object was deleted, or deleted and created
        again by someone else, since it was judged, the API server refuses (PreconditionFailed)."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        body = {**obj, "metadata": {**meta, "uid": uid}}
        try:
            return self._call(
                "PATCH",
                path,
                body=body,
                query=[("fieldManager", manager), ("force", "true")],
                content_type="application/apply-patch+yaml",
            )
        except ApiException as exc:
            # 409: "uid mismatch ... no existing object"; 422: "metadata.uid: field is immutable" (another object)
            if exc.status == 409 and "has been modified" in (exc.body or ""):  # the resourceVersion it carries
                raise PreconditionFailed(f"{obj['kind']} {meta['name']} changed since it was read") from None
            if exc.status == 409 or (exc.status == 422 and "metadata.uid" in (exc.body or "")):
                raise PreconditionFailed(f"{obj['kind']} {meta['name']} is no longer the object uid {uid}") from None
            raise

    def set_spec(self, current: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        """Set each field of ``spec`` in ``current``'s spec as given (a list replaced whole, not merged with another
        field manager's entries as an apply merges it): a JSON patch, guarded by the resourceVersion ``current`` was
        read at (a change since is PreconditionFailed: judged again). Fields ``spec`` leaves out are kept (a
        Service's cluster IP). Under a field manager of its own
        (``RECLAIM_FIELD_MANAGER``), not the operator's: an Update entry of the operator's would be turned into a
        second Apply entry by ``own_fields``, and the API server keeps one of two entries of a manager."""
        meta = current["metadata"]
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
        ]
        ops += [{"op": "add", "path": f"/spec/{_pointer(k)}", "value": v} for k, v in spec.items()]
        path = resource_path(current["apiVersion"], current["kind"], meta["namespace"], meta["name"])
        try:
            result = self._call("PATCH", path, body=ops, query=[("fieldManager", RECLAIM_FIELD_MANAGER)],
                                content_type="application/json-patch+json")  # fmt: skip
        except ApiException as exc:
            # a failed test op: 422 "testing value /metadata/resourceVersion failed: test failed" (json-patch, 1.34)
            if exc.status in (404, 409) or (exc.status == 422 and "test failed" in (exc.body or "")):
                raise PreconditionFailed(f"{current['kind']} {meta['name']} changed before its spec was set") from None
            raise
        result.setdefault("apiVersion", current["apiVersion"])
        result.setdefault("kind", current["kind"])
        return result

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when an object of that name exists already (409): it is NOT ours for that (the caller
        reads it and judges who controls it)."""
        meta = obj["metadata"]
        try:
            return self._call("POST", resource_path(obj["apiVersion"], obj["kind"], meta["namespace"]), body=obj,
                              query=[("fieldManager", FIELD_MANAGER)])  # fmt: skip
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def own_fields(self, obj: dict[str, Any], unset: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
        """Turn the operator's Update entry of managedFields (left by the POST that created the object) into an
        Apply entry, as ``kubectl``'s client-side to server-side apply upgrade does: later applies then remove
        the fields they no longer set. A JSON patch guarded by the object's uid and the entry's position.

        ``unset``: fields (``("f:spec", "f:replicas")``) the manifest leaves out but the entry owns because the
        API server defaulted them at the create; they are taken out of the entry, so no owner of them is the
        operator's (under an HPA, spec.replicas is the autoscaler's from its first write, with nothing to hand
        over)."""
        meta = obj["metadata"]
        entries = meta.get("managedFields") or []
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": meta["uid"]}]
        for i, entry in enumerate(entries):
            if own_entry(entry, "Update"):
                ops += [
                    {"op": "test", "path": f"/metadata/managedFields/{i}/manager", "value": FIELD_MANAGER},
                    {"op": "test", "path": f"/metadata/managedFields/{i}/operation", "value": "Update"},
                    {"op": "replace", "path": f"/metadata/managedFields/{i}/operation", "value": "Apply"},
                ]
                fields = entry.get("fieldsV1") or {}
                ops += [
                    {"op": "remove", "path": f"/metadata/managedFields/{i}/fieldsV1/{parent}/{field}"}
                    for parent, field in unset
                    if field in (fields.get(parent) or {})
                ]
        if len(ops) == 1:
            return obj
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        try:
            result = self._call("PATCH", path, body=ops, query=[("fieldManager", FIELD_MANAGER)],
                                content_type="application/json-patch+json")  # fmt: skip
        except ApiException as exc:
            if exc.status in (404, 409, 422):  # gone, or changed under us: judge it again
                raise PreconditionFailed(f"{obj['kind']} {meta['name']} changed before its fields were ours") from None
            raise
        result.setdefault("apiVersion", obj["apiVersion"])
        result.setdefault("kind", obj["kind"])
        return result

    def list_events(self, namespace: str, field_selector: str, limit: int, max_bytes: int) -> list[dict[str, Any]]:
        """Core v1 Events of ``namespace`` that match ``field_selector`` (e.g. ``involvedObject.uid=...``), at most
        ``limit`` of them, from an answer of at most ``max_bytes`` (else ``TooLarge``). Asked at resourceVersion 0:
        where the API server keeps a watch cache of Events (not by default) it answers from memory, all matches (it
        ignores the limit there); otherwise etcd answers the current list, the limit honoured."""
        query = [("fieldSelector", field_selector), ("limit", str(limit)), ("resourceVersion", "0")]
        result = self._call("GET", kinds.EVENT.path(namespace), query=query, max_bytes=max_bytes)
        items = result.get("items") or []
        return [item for item in items if isinstance(item, dict)][:limit]

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = self._call(
            "GET", resource_path(api_version, kind, namespace), query=[("labelSelector", label_selector)]
        )
        items = result.get("items") or []
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def custom_resource_definition(self, name: str) -> dict[str, Any] | None:
        """The CustomResourceDefinition ``name`` as the API server serves it (None when there is none): a list
        with a field selector, as the cluster-wide chart grants list (not get) on CRDs; the namespaced chart
        grants nothing on them (ApiException 403)."""
        row = kinds.CUSTOM_RESOURCE_DEFINITION
        result = self._call("GET", row.path(), query=[("fieldSelector", f"metadata.name={name}")])
        items = result.get("items") or []
        return items[0] if items and isinstance(items[0], dict) else None

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete exactly the object ``uid`` (a precondition): never another object that took the name."""
        body = {"propagationPolicy": "Background", "preconditions": {"uid": uid}}
        try:
            self._call("DELETE", resource_path(api_version, kind, namespace, name), body=body)
        except ApiException as exc:
            if exc.status == 409:
                raise PreconditionFailed(f"{kind} {name} is no longer the object uid {uid}") from None
            if exc.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Merge-patch the ModelDeployment's status; ``dry_run``: the API server answers what it would store
        (pruned to the served CRD) and stores nothing."""
        path = f"{kinds.MODELDEPLOYMENT.path(namespace, name)}/status"
        query = [("fieldManager", FIELD_MANAGER), *([("dryRun", "All")] if dry_run else [])]
        return self._call(
            "PATCH",
            path,
            body={"status": status},
            query=query,
            content_type="application/merge-patch+json",
        )

    def write_configmap(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str],
        data: dict[str, str | None],
        resource_version: str | None,
    ) -> dict[str, Any]:
        """Create the ConfigMap with ``data`` (``resource_version`` None: it must not exist), or merge-patch its
        data (null removes a key) only if it is still at ``resource_version``. PreconditionFailed when another
        writer got there first: read it again and recompute."""
        path = kinds.CONFIG_MAP.path(namespace, name)
        if resource_version is None:
            body = {**kinds.CONFIG_MAP.type_meta(), "metadata": {"name": name, "namespace": namespace,
                    "labels": labels}, "data": {k: v for k, v in data.items() if v is not None}}  # fmt: skip
            created = self.create(body)
            if created is None:
                raise PreconditionFailed(f"ConfigMap {namespace}/{name} was created meanwhile")
            return created
        patch = {"metadata": {"resourceVersion": resource_version}, "data": data}
        try:
            return self._call("PATCH", path, body=patch, query=[("fieldManager", FIELD_MANAGER)],
                              content_type="application/merge-patch+json")  # fmt: skip
        except ApiException as exc:
            if exc.status in (404, 409):
                raise PreconditionFailed(f"ConfigMap {namespace}/{name} changed meanwhile") from None
            raise

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event, best effort: a refusal is logged, never raised."""
        try:
            self.post_event(involved, type_, reason, message)
        except ApiException as exc:  # events are best effort: never fail a reconcile over one
            log.warning("could not post event %s: %s", reason, exc.reason)

    def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event; the API server's refusal is raised (ApiException)."""
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            **kinds.EVENT.type_meta(),
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", kinds.MODELDEPLOYMENT.api_version),
                "kind": involved.get("kind", kinds.MODELDEPLOYMENT.kind),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "modelship-operator"},
            "reportingComponent": "modelship.io/operator",
            "reportingInstance": "modelship-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call("POST", kinds.EVENT.path(meta["namespace"]), body=body)


class EventPoster:
    """Posts Events from a background thread: a reconcile never waits on them, and a full queue drops them
    (Events are best effort; status is the record). Every Event not posted is counted in
    ``modelship_events_dropped_total{reason}`` (prometheus_client's counters take a lock: a reconcile's thread and
    the poster's both drop). An Event of a namespace being terminated is not posted: the API server's refusal of
    one holds the namespace (``terminating``), as a refused create of a reconcile does."""

    def __init__(self, kube: Kube, capacity: int = 10000, terminating: TerminatingNamespaces | None = None) -> None:
        import queue
        import threading

        self._kube = kube
        self.terminating = terminating
        """The namespaces held as terminating (the reconciler's, shared): their Events are dropped."""
        self._queue: queue.Queue[tuple[dict[str, Any], str, str, str]] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="event-poster", daemon=True)
        self._thread.start()

    def post(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        import queue

        try:
            self._queue.put_nowait((involved, type_, reason, message))
        except queue.Full:
            self._drop("queue-full")

    def _drop(self, why: str) -> None:
        """One Event not posted: counted in ``modelship_events_dropped_total{reason}``."""
        EVENTS_DROPPED.labels(why).inc()

    def _run(self) -> None:
        while True:
            involved, type_, reason, message = self._queue.get()
            namespace = (involved.get("metadata") or {}).get("namespace") or ""
            if self.terminating is not None and self.terminating.held(namespace):
                self._drop("namespace-terminating")
                continue
            try:
                self._kube.post_event(involved, type_, reason, message)
            except ApiException as exc:
                if refused_as_terminating(exc):  # its namespace is going: said once (hold), not per Event
                    self._drop("namespace-terminating")
                    if self.terminating is not None:
                        self.terminating.hold(namespace)
                    log.debug("event %s not posted: namespace %s is being terminated", reason, namespace)
                else:
                    self._drop("api-error")
                    log.warning("could not post event %s: %s", reason, exc.reason)
            except Unreachable as exc:
                self._drop("unreachable")
                log.warning("could not post event %s: %s", reason, exc)
            except Exception:  # a lost Event must never stop the poster
                self._drop("error")
                log.warning("could not post event %s", reason, exc_info=True)


def transient(error: BaseException) -> bool:
    """An error that says nothing about the object: the API server unreachable, timing out, overloaded or
    failing (kopf retries these the same way). Anything else is the object's, or the operator's, problem."""
    if isinstance(error, ApiException):
        return error.status in (0, 429) or (error.status or 0) >= 500
    return isinstance(error, OSError)  # Unreachable, and the socket errors underneath


def api_error_text(exc: ApiException) -> str:
    return str((status_body(exc) or {}).get("message") or exc.reason)


RECLAIM_FIELD_MANAGER = "modelship-reclaim"
"""The field manager of ``Kube.set_spec``'s patches."""


def _pointer(key: str) -> str:
    """``key`` as one JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
