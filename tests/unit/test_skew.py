"""Version skew: a ModelDeployment as a newer CRD serves it (api.skew's policy, pure), and the reconcile that
reads it (against an in-memory API). The same skewed CRD runs on the real API server in
tests/integration/test_version_skew.py."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelship import API_VERSION, VERSION, __version__
from modelship.api.skew import (
    UnsupportedFields,
    keep_unknown,
    known_spec_schema,
    known_status_schema,
    read_served,
    read_status,
    served_default,
    served_spec_schema,
    unknown_fields,
)
from modelship.api.status import ModelDeploymentStatus
from modelship.cli import CliError
from modelship.commands import load_modeldeployments
from modelship.controller.mergepatch import apply_merge_patch, merge_patch
from modelship.controller.reconcile import Reconciler
from modelship.controller.skew import Notes, ServedSchema, keep_unknown_status
from modelship.controller.store import Store
from modelship.resources.revision import revision
from tests.support import skew as newer
from tests.support.specs import valid_doc
from tests.unit.test_loud_failures import MemoryKube, md_body
from tests.unit.test_plan import CONFIG

SERVED = served_spec_schema(newer.newer_crd(), VERSION)
assert SERVED is not None


def served() -> Any:
    return SERVED


def unreadable() -> Any:
    return None


def doc_with(*fields: tuple[tuple[str, ...], Any]) -> dict[str, Any]:
    doc = valid_doc()
    doc["metadata"]["namespace"] = "ml"
    for path, value in fields:
        node = doc["spec"]
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return doc


STATUS = {
    "observedGeneration": 2,
    "phase": "Ready",
    "servingRevision": "r1",
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": "2026-11-29T05:00:00Z",
         newer.NEW_CONDITION_FIELD: "info"},
        {"type": "Stalled", "status": "False", "reason": "Healthy", "lastTransitionTime": "2026-11-29T05:00:00Z"},
    ],
    "optimization": {"revision": "r1", "value": 0.98, newer.NEW_NESTED_STATUS[1]: 1.5},
    newer.NEW_STATUS: "written by modelship 0.2",
}  # fmt: skip


# -- the pure policy ---------------------------------------------------------------------------------------------


def test_a_spec_of_known_fields_has_none_unknown_and_free_form_maps_are_not_unknown() -> None:
    doc = valid_doc()
    doc["spec"]["optimization"]["job"] = {"podAnnotations": {"anything.example.com/x": "y"}}
    assert unknown_fields(known_spec_schema(), doc["spec"]) == []


def test_unknown_fields_are_found_at_every_depth_and_in_list_items_outermost_only() -> None:
    doc = doc_with((newer.SETTING, True), (("build", "newBlock"), {"a": {"b": 1}}))
    doc["spec"]["optimization"]["steps"][1]["quantize"]["newOption"] = 3
    assert unknown_fields(known_spec_schema(), doc["spec"]) == [
        ("optimization", "steps", 1, "quantize", "newOption"),
        ("build", "newBlock"),
        newer.SETTING,
    ]


def test_an_unknown_spec_field_is_unsupported_naming_every_path_value_and_this_version() -> None:
    doc = doc_with((newer.SETTING, True), (newer.DEFAULTED, "eager"))
    with pytest.raises(UnsupportedFields) as info:
        read_served(doc, served)
    message = info.value.message("r1")
    assert "spec.serving.turbo (true)" in message
    assert 'spec.serving.warmup ("eager")' in message  # a value other than the served default
    assert f"modelship {__version__}" in message and API_VERSION in message
    assert "Upgrade the operator" in message and "revision r1 keeps serving" in message
    assert info.value.schema_read


def test_a_field_holding_the_served_crds_default_is_tolerated_and_changes_no_revision() -> None:
    plain = read_served(doc_with(), served).md
    reading = read_served(doc_with((newer.DEFAULTED, newer.DEFAULTED_VALUE)), served)
    assert [(f.path, f.value) for f in reading.tolerated] == [("spec.serving.warmup", newer.DEFAULTED_VALUE)]
    assert revision(reading.md.spec) == revision(plain.spec)


def test_without_the_served_crd_even_a_defaulted_field_stalls_and_the_message_says_why() -> None:
    with pytest.raises(UnsupportedFields) as info:
        read_served(doc_with((newer.DEFAULTED, newer.DEFAULTED_VALUE)), unreadable)
    assert not info.value.schema_read
    assert "spec.serving.warmup" in str(info.value) and "cannot read the installed CRD" in str(info.value)


def test_a_served_crd_that_declares_no_default_there_tolerates_nothing() -> None:
    with pytest.raises(UnsupportedFields):
        read_served(doc_with((newer.SETTING, False)), served)  # false is no default: the CRD declares none


def test_the_served_crd_is_asked_only_when_the_spec_has_unknown_fields() -> None:
    asked: list[int] = []

    def counting() -> Any:
        asked.append(1)
        return SERVED

    read_served(doc_with(), counting)
    assert asked == []
    read_served(doc_with((newer.DEFAULTED, newer.DEFAULTED_VALUE)), counting)
    assert asked == [1]


def test_defaults_are_applied_below_a_new_object_as_the_api_server_does() -> None:
    schema = {
        "type": "object",
        "properties": {
            "block": {
                "type": "object",
                "default": {},
                "properties": {"x": {"type": "integer", "default": 5}, "y": {"type": "string"}},
            }
        },
    }
    assert served_default(schema, ("block",)) == (True, {"x": 5})
    assert served_default(schema, ("block", "y")) == (False, None)
    assert served_default(schema, ("nowhere",)) == (False, None)


def test_a_spec_invalid_besides_is_still_a_validation_error() -> None:
    doc = doc_with((newer.DEFAULTED, newer.DEFAULTED_VALUE))
    doc["spec"]["serving"]["replicas"] = -1
    with pytest.raises(ValidationError):
        read_served(doc, served)


def test_unknown_status_fields_are_ignored_and_the_rest_is_read() -> None:
    doc = doc_with()
    doc["status"] = copy.deepcopy(STATUS)
    reading = read_served(doc, unreadable)  # status needs no served CRD
    assert set(reading.ignored) == {
        "status.conditions[0].severity",
        "status.optimization.energyJoules",
        "status.upgradeNote",
    }
    status = reading.md.status
    assert status.serving_revision == "r1" and status.optimization is not None and status.optimization.value == 0.98
    assert [c.type for c in status.conditions] == ["Ready", "Stalled"]


def test_a_status_value_this_operator_cannot_read_drops_that_field_only() -> None:
    status, ignored, unreadable = read_status({**STATUS, "phase": "Upgrading"})  # a newer operator's phase
    assert status.phase is None and status.serving_revision == "r1"
    assert "status.phase" in ignored and unreadable == {"phase"}


NEWER_ROLLOUT = {  # a Canary rollout in a phase a newer operator added: known field, unreadable value
    "candidate": "r2", "stable": "r1", "phase": "Paused", "weight": 10, "startedAt": "2026-11-29T05:00:00Z",
}  # fmt: skip


def test_a_known_status_field_with_an_unreadable_value_is_reported_and_a_write_leaves_it_alone() -> None:
    current = {**STATUS, "rollout": NEWER_ROLLOUT}
    reading = read_status(current)
    assert reading.status.rollout is None and reading.status.serving_revision == "r1"
    assert reading.unreadable == {"rollout"} and "status.rollout" in reading.ignored
    assert read_status(STATUS).unreadable == frozenset()  # unknown fields are not "unreadable": kept by keep_unknown
    desired = {"observedGeneration": 3, "phase": "Deploying", "servingRevision": "r1"}
    written = apply_merge_patch(current, merge_patch(current, keep_unknown_status(current, desired)))
    assert written["rollout"] == NEWER_ROLLOUT and written["phase"] == "Deploying"
    assert written[newer.NEW_STATUS] == STATUS[newer.NEW_STATUS]
    mine = {**NEWER_ROLLOUT, "phase": "RolledBack"}  # a status that sets the field anew writes it
    patch = merge_patch(current, keep_unknown_status(current, {**desired, "rollout": mine}))
    assert apply_merge_patch(current, patch)["rollout"] == mine


def test_kopfs_own_status_key_is_not_reported() -> None:
    assert read_status({"kopf": {"progress": {}}, "phase": "Ready"})[1] == ()


def test_a_status_write_keeps_every_field_this_operator_does_not_know() -> None:
    desired = ModelDeploymentStatus.model_validate(
        {
            "observedGeneration": 3,
            "phase": "Deploying",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "RollingOut",
                 "lastTransitionTime": "2026-11-29T06:00:00Z"},
            ],
            "optimization": {"revision": "r2"},
        }
    ).wire()
    patch = merge_patch(STATUS, keep_unknown(known_status_schema(), STATUS, desired))
    written = apply_merge_patch(STATUS, patch)
    assert written[newer.NEW_STATUS] == STATUS[newer.NEW_STATUS]
    assert written["optimization"] == {"revision": "r2", newer.NEW_NESTED_STATUS[1]: 1.5}  # known dropped, new kept
    assert written["conditions"][0][newer.NEW_CONDITION_FIELD] == "info"  # matched by type
    assert written["conditions"][0]["reason"] == "RollingOut"
    assert "servingRevision" not in written  # a field this operator knows and drops is still dropped


def test_the_cli_keeps_rejecting_unknown_fields(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(doc_with((newer.DEFAULTED, newer.DEFAULTED_VALUE))))
    with pytest.raises(CliError, match=r"spec\.serving\.warmup: unknown field"):
        load_modeldeployments(str(path))


# -- the reconcile -----------------------------------------------------------------------------------------------


class SkewKube(MemoryKube):
    """The in-memory API serving the newer CRD (or refusing it, as to a namespaced operator)."""

    def __init__(self, store: Store, crd_status: int = 200) -> None:
        super().__init__(store)
        self.crd_status = crd_status
        self.crd_reads = 0

    def exists(self, *args: Any) -> bool:
        return True  # every Secret, ConfigMap and claim a Job mounts

    def custom_resource_definition(self, name: str) -> dict[str, Any] | None:
        self.crd_reads += 1
        if self.crd_status != 200:
            raise ApiException(status=self.crd_status, reason="Forbidden")
        assert name == "modeldeployments.modelship.io"
        return newer.newer_crd()


def reconcile(body: dict[str, Any], crd_status: int = 200) -> tuple[SkewKube, dict[str, Any]]:
    store = Store()
    store.put("ModelDeployment", body)
    kube = SkewKube(store, crd_status)
    Reconciler(kube, store, CONFIG).reconcile("ml", "digits")  # type: ignore[arg-type]
    return kube, store.get("ModelDeployment", "ml", "digits") or {}


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_reconcile_stalls_an_unsupported_spec_with_a_warning_and_keeps_what_serves() -> None:
    body = md_body()
    body["spec"]["serving"]["turbo"] = True
    body["status"] = copy.deepcopy(STATUS)
    kube, after = reconcile(body)
    stalled = cond(after["status"], "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "UnsupportedFields")
    assert "spec.serving.turbo (true)" in stalled["message"] and "revision r1 keeps serving" in stalled["message"]
    assert ("Warning", "ReadyUnsupportedFields") in [(t, r) for t, r, _ in kube.events]
    status = after["status"]
    assert status["servingRevision"] == "r1" and status["optimization"]["revision"] == "r1"  # kept, not wiped
    assert status[newer.NEW_STATUS] == STATUS[newer.NEW_STATUS]  # the newer operator's field is left alone
    assert status["lastFailure"]["reason"] == "UnsupportedFields"


def test_reconcile_tolerates_a_defaulted_field_with_the_crd_readable_and_stalls_without() -> None:
    body = md_body()
    body["spec"]["serving"]["warmup"] = newer.DEFAULTED_VALUE
    _, after = reconcile(copy.deepcopy(body))
    assert cond(after["status"], "Stalled")["status"] == "False"
    assert after["status"]["phase"] == "Optimizing"  # planned as usual: the optimization Job is created
    _, after = reconcile(copy.deepcopy(body), crd_status=403)
    stalled = cond(after["status"], "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "UnsupportedFields")
    assert "cannot read the installed CRD" in stalled["message"]


def test_reconcile_with_a_newer_operators_status_plans_as_usual_and_keeps_its_fields() -> None:
    body = md_body()
    body["status"] = copy.deepcopy(STATUS)
    kube, after = reconcile(body)
    status = after["status"]
    assert cond(status, "Stalled")["status"] == "False"
    assert status[newer.NEW_STATUS] == STATUS[newer.NEW_STATUS]
    assert cond(status, "Ready")[newer.NEW_CONDITION_FIELD] == "info"
    assert kube.crd_reads == 0  # nothing unknown in the spec: the CRD is not read


def test_reconcile_keeps_a_status_field_whose_value_this_operator_cannot_read() -> None:
    body = md_body()
    body["status"] = {**copy.deepcopy(STATUS), "rollout": copy.deepcopy(NEWER_ROLLOUT)}
    kube, after = reconcile(body)
    status = after["status"]
    assert kube.status_writes and cond(status, "Stalled")["status"] == "False"
    assert status["phase"] == "Optimizing"  # planned as usual
    assert status["rollout"] == NEWER_ROLLOUT  # not erased by a merge patch of rollout: null


def test_the_served_crd_is_read_once_per_ttl_and_a_403_is_remembered_too() -> None:
    now = [0.0]
    kube = SkewKube(Store(), crd_status=403)
    schema = ServedSchema(kube, Notes(), ttl=60, clock=lambda: now[0])  # type: ignore[arg-type]
    assert schema() is None and schema() is None
    assert kube.crd_reads == 1
    kube.crd_status = 200
    now[0] = 61.0
    assert schema() == SERVED and schema() == SERVED
    assert kube.crd_reads == 2


class SlowCrdKube(SkewKube):
    """Its CRD read is held in the network until ``release`` is set; ``entered`` counts the reads begun."""

    def __init__(self) -> None:
        super().__init__(Store())
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def custom_resource_definition(self, name: str) -> dict[str, Any] | None:
        self.entered.release()
        assert self.release.wait(timeout=60)
        return super().custom_resource_definition(name)


def calls(schema: ServedSchema, n: int) -> tuple[list[threading.Thread], list[Any]]:
    """``n`` threads, each asking ``schema`` once, started; what they got is appended to the list."""
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(schema())) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, got


def test_readers_of_the_served_schema_never_queue_behind_the_crd_read() -> None:
    now = [0.0]
    kube = SlowCrdKube()
    schema = ServedSchema(kube, Notes(), ttl=60, clock=lambda: now[0])  # type: ignore[arg-type]
    try:
        # no value yet: four callers, one read (the others wait for that one, not for one each)
        first, got = calls(schema, 4)
        assert kube.entered.acquire(timeout=30)
        kube.release.set()
        for t in first:
            t.join(timeout=30)
        assert got == [SERVED] * 4 and kube.crd_reads == 1
        # the value is stale: one caller reads again, held in the network; the others get the last value meanwhile
        now[0] = 61.0
        kube.release.clear()
        kube.crd_status = 403  # what the new read will find (a namespaced install now): None
        (reader,), read = calls(schema, 1)
        assert kube.entered.acquire(timeout=30)  # the read is in flight
        meanwhile, last = calls(schema, 3)
        for t in meanwhile:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in meanwhile) and not kube.release.is_set()  # none waited for the read
        assert last == [SERVED] * 3
        kube.release.set()
        reader.join(timeout=30)
        assert read == [None] and schema() is None and kube.crd_reads == 2  # the new value, once read
        # a read that fails raises in its own caller; the next caller reads again
        now[0] = 200.0
        kube.crd_status = 500
        with pytest.raises(ApiException):
            schema()
        kube.crd_status = 200
        assert schema() == SERVED and kube.crd_reads == 4
    finally:
        kube.release.set()  # never leave a thread held
