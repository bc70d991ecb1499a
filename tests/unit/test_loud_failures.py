"""An error the operator cannot plan around is never silent: a builder that raises ends, after the work queue's
tries, in a Stalled status with the error and a Warning Event (here against an in-memory API; the integration
tier does it against the real API server)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from modelship.controller import stalls as stalls_module
from modelship.controller.mergepatch import apply_merge_patch
from modelship.controller.reconcile import Reconciler
from modelship.controller.stages import build as build_stage
from modelship.controller.store import Store
from modelship.controller.workqueue import Retry, WorkQueue
from modelship.resources.revision import revision
from tests.support.specs import valid_doc
from tests.unit.test_plan import CONFIG, summary

CONTAINER = {"name": "optimize", "image": "modelship/optimizer:0.1.0", "args": ["optimize"]}
DONE = {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-26T11:00:00Z"}


class MemoryKube:
    """The Kube methods a reconcile uses, over a dict: status patches merge, Events are recorded."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events: list[tuple[str, str, str]] = []
        self.status_writes = 0

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def exists(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        return True  # what a pod mounts is there (tests/unit/test_mount_check.py asks otherwise)

    def metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name}} if self.exists(api_version, kind, namespace, name) else None

    def apply(self, obj: dict[str, Any], uid: str) -> dict[str, Any]:
        return obj

    def own_fields(self, obj: dict[str, Any], unset: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
        return obj

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return obj

    def delete(self, *args: Any) -> None:
        pass

    def write_configmap(self, *args: Any) -> dict[str, Any]:
        return {}

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.status_writes += 1
        body = self.store.get("ModelDeployment", namespace, name) or {}
        return {**body, "status": apply_merge_patch(body.get("status") or {}, status)}

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def md_body(**spec: Any) -> dict[str, Any]:
    doc = valid_doc()
    doc["metadata"].update(namespace="ml", uid="u-1", generation=3, resourceVersion="10")
    doc["spec"].update(spec)
    return doc


def optimized(store: Store, body: dict[str, Any]) -> None:
    """The optimization Job of the revision has succeeded, with its pod's summary."""
    from modelship.api import ModelDeployment

    rev = revision(ModelDeployment.from_body(body).spec)
    labels = {"modelship.io/modeldeployment": "digits", "app.kubernetes.io/component": "optimizer",
              "modelship.io/revision": rev, "batch.kubernetes.io/job-name": f"digits-opt-{rev}"}  # fmt: skip
    store.put("Job", {"metadata": {"name": f"digits-opt-{rev}", "namespace": "ml", "labels": labels, "uid": "j-1",
                                   "ownerReferences": [{"uid": body["metadata"]["uid"], "controller": True}]},
                      "spec": {"template": {"spec": {"containers": [CONTAINER]}}},
                      "status": {"conditions": [DONE], "completionTime": "2026-11-26T11:00:00Z"}})  # fmt: skip
    terminated = {"terminated": {"exitCode": 0, "message": summary(), "finishedAt": "2026-11-26T11:00:00Z"}}
    store.put("Pod", {"metadata": {"name": "p", "namespace": "ml", "labels": labels,
                                   "ownerReferences": [{"uid": "j-1", "controller": True}]},
                      "spec": {"containers": [CONTAINER]},
                      "status": {"phase": "Succeeded",
                                 "containerStatuses": [{"name": "optimize", "state": terminated}]}})  # fmt: skip


def stalled(kube: MemoryKube, store: Store) -> dict[str, Any]:
    status: dict[str, Any] = (store.get("ModelDeployment", "ml", "digits") or {}).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "Stalled"), {})


def test_a_builder_error_ends_stalled_with_the_error_and_an_event(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_builder(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ValueError("kaniko builds one platform per run: use engine buildkit for linux/amd64 + linux/arm64")

    monkeypatch.setattr(build_stage, "build_job", broken_builder)
    store = Store()
    body = md_body()
    store.put("ModelDeployment", body)
    optimized(store, body)
    kube = MemoryKube(store)
    reconciler = Reconciler(kube, store, CONFIG)  # type: ignore[arg-type]
    queue = WorkQueue(
        lambda key: reconciler.reconcile(*key),
        workers=1,
        retry=Retry(max_tries=3, base_seconds=0.01),
        give_up=lambda key, error, tries: reconciler.give_up(*key, error, tries),
    )
    queue.start()
    try:
        queue.add(("ml", "digits"))
        deadline = time.monotonic() + 30
        while stalled(kube, store).get("status") != "True":
            assert time.monotonic() < deadline, "never stalled"
            time.sleep(0.01)
    finally:
        queue.stop()
    cond = stalled(kube, store)
    assert cond["reason"] == "ReconcileError" and cond["observedGeneration"] == 3
    assert "ValueError: kaniko builds one platform per run" in cond["message"]
    status = (store.get("ModelDeployment", "ml", "digits") or {})["status"]
    assert status["phase"] == "Failed"
    assert status["lastFailure"]["stage"] == "Reconcile" and status["lastFailure"]["reason"] == "ReconcileError"
    assert "kaniko" in status["lastFailure"]["message"]
    assert ("Warning", "ReadyReconcileError", cond["message"]) in kube.events
    # said once: giving up again with the same error writes nothing new
    writes, events = kube.status_writes, len(kube.events)
    reconciler.give_up("ml", "digits", ValueError(cond["message"].split("ValueError: ", 1)[1]), 3)
    assert (kube.status_writes, len(kube.events)) == (writes, events)


def test_an_invalid_spec_is_stalled_and_keeps_what_status_held() -> None:
    store = Store()
    body = md_body(serving={"replicas": 2, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}})
    body["status"] = {"servingRevision": "rold", "conditions": [
        {"type": "Deployed", "status": "True", "reason": "Available", "message": "2/2", "observedGeneration": 2,
         "lastTransitionTime": "2026-11-26T10:00:00Z"}]}  # fmt: skip
    store.put("ModelDeployment", body)
    kube = MemoryKube(store)
    assert Reconciler(kube, store, CONFIG).reconcile("ml", "digits") is None  # type: ignore[arg-type]
    cond = stalled(kube, store)
    assert cond["status"] == "True" and cond["reason"] == "InvalidSpec" and "maxReplicas" in cond["message"]
    status = (store.get("ModelDeployment", "ml", "digits") or {})["status"]
    assert status["servingRevision"] == "rold" and status["observedGeneration"] == 3
    deployed = next(c for c in status["conditions"] if c["type"] == "Deployed")
    assert deployed["observedGeneration"] == 2  # another generation's finding, kept as it was
    assert kube.events == []  # status says it, for every resync; nothing else is touched


def test_describe_error_uses_the_api_servers_words() -> None:
    from kubernetes.client.exceptions import ApiException

    api = ApiException(status=422, reason="Unprocessable Entity")
    api.body = '{"message": "Job.batch \\"x\\" is invalid: spec.template.spec.containers[0].image: Required value"}'
    assert stalls_module.describe_error(api).startswith("API error 422: Job.batch")
    assert stalls_module.describe_error(KeyError("spec")) == "KeyError: 'spec'"
