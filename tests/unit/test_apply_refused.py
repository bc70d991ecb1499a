"""A write the API server refuses for the object's content (an admission policy or webhook denied it, or it is
invalid) ends the pass in a steady Stalled status (ApplyRefused) instead of an error retried into a give-up; a
403 of RBAC stays an error. The Status bodies are the API server's own (kube-apiserver 1.34.4, captured from the
test control plane: the webhook's from a webhook that denied a create without a status code, which the API server
answers 400; one that sets 403 says the same words). A give-up says the same words for the same failure, whatever
the try count."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelship.controller.reconcile import Reconciler
from modelship.controller.stalls import REFUSAL_LIMIT, refusal
from modelship.controller.store import Store
from tests.unit.test_loud_failures import MemoryKube, md_body, optimized, stalled
from tests.unit.test_plan import CONFIG

VAP_WORDS = (
    "ValidatingAdmissionPolicy 'probe-freeze' with binding 'probe-freeze-b' denied request: the pod template is frozen"
)
VAP_FORBIDDEN = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": f'deployments.apps "d" is forbidden: {VAP_WORDS}', "reason": "Forbidden",
                 "details": {"name": "d", "group": "apps", "kind": "deployments", "causes": [{"message": VAP_WORDS}]},
                 "code": 403}  # fmt: skip
VAP_INVALID = {**VAP_FORBIDDEN, "reason": "Invalid", "code": 422}  # a validation without a reason: 422
INVALID = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": 'Deployment.apps "d" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal '
                      "to 0", "reason": "Invalid",
           "details": {"name": "d", "group": "apps", "kind": "Deployment", "causes": [
               {"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0",
                "field": "spec.replicas"}]}, "code": 422}  # fmt: skip
RBAC = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps "d" is forbidden: User "system:serviceaccount:probe:nobody" cannot patch resource '
                   '"deployments" in API group "apps" in the namespace "probe"', "reason": "Forbidden",
        "details": {"name": "d", "group": "apps", "kind": "deployments"}, "code": 403}  # fmt: skip
WEBHOOK = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": 'admission webhook "deny.example.com" denied the request: images from docker.io are not allowed',
           "code": 400}  # fmt: skip
WEBHOOK_403 = {**WEBHOOK, "reason": "Forbidden", "code": 403}
TERMINATING = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": 'deployments.apps "d" is forbidden: unable to create new content in namespace ml because it '
                          "is being terminated", "reason": "Forbidden",
               "details": {"name": "d", "group": "apps", "kind": "deployments",
                           "causes": [{"reason": "NamespaceTerminating", "message": "namespace ml is being terminated",
                                       "field": "metadata.namespace"}]}, "code": 403}  # fmt: skip


def api_error(body: dict[str, Any] | str, status: int | None = None) -> ApiException:
    code = status if status is not None else (body["code"] if isinstance(body, dict) else 500)
    exc = ApiException(status=code, reason="x")
    exc.body = body if isinstance(body, str) else json.dumps(body)
    return exc


@pytest.mark.parametrize("body", [VAP_FORBIDDEN, VAP_INVALID, INVALID, WEBHOOK, WEBHOOK_403],
                         ids=["vap403", "vap422", "invalid", "webhook400", "webhook403"])  # fmt: skip
def test_a_refusal_for_the_objects_content_is_told_in_the_api_servers_words(body: dict[str, Any]) -> None:
    assert refusal(api_error(body)) == body["message"]


@pytest.mark.parametrize(
    "exc",
    [api_error(RBAC), api_error(TERMINATING), api_error({**INVALID, "reason": "Conflict", "code": 409}),
     api_error(VAP_FORBIDDEN, 500), api_error({**INVALID, "code": 400}, 400),
     api_error("<html>bad gateway</html>", 403), api_error("", 422),
     api_error({**RBAC, "message": None}), api_error({**INVALID, "kind": "Deployment"})],
    ids=["rbac", "terminating", "conflict", "500", "invalid-400", "not-json", "empty", "no-message", "not-a-status"],
)  # fmt: skip
def test_anything_else_is_not_a_refusal(exc: ApiException) -> None:
    assert refusal(exc) is None


def test_a_refusal_is_one_bounded_line() -> None:
    words = "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: line one\n\tline\x1b[31m two\u2028"
    words += "x" * 5000
    text = refusal(api_error({**VAP_FORBIDDEN, "message": f'deployments.apps "d" is forbidden: {words}'}))
    assert text is not None and len(text) == REFUSAL_LIMIT and text.endswith("…")
    assert text.startswith('deployments.apps "d" is forbidden: ValidatingAdmissionPolicy \'p\' with binding \'b\' '
                           "denied request: line one line [31m two x")  # fmt: skip
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F or ch == "\u2028" for ch in text)


class RefusingKube(MemoryKube):
    """An in-memory API that refuses every write of one kind with ``error`` (None: takes it)."""

    def __init__(self, store: Store, kind: str, error: ApiException | None) -> None:
        super().__init__(store)
        self.kind = kind
        self.error = error
        self.written: list[str] = []

    def _write(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == self.kind and self.error is not None:
            raise self.error
        self.written.append(obj["kind"])
        return {**obj, "metadata": {**obj["metadata"], "uid": f"uid-{obj['kind']}", "resourceVersion": "1"}}

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._write(obj)

    def apply(self, obj: dict[str, Any], uid: str, *manager: str) -> dict[str, Any]:
        return self._write(obj)


def refused_reconciler(error: ApiException | None) -> tuple[Reconciler, RefusingKube, Store]:
    store = Store()
    body = md_body(build={"enabled": False})
    store.put("ModelDeployment", body)
    optimized(store, body)
    kube = RefusingKube(store, "Deployment", error)
    return Reconciler(kube, store, CONFIG), kube, store  # type: ignore[arg-type]


def refusal_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]


def test_a_refused_apply_writes_the_passs_status_stalled_once_and_clears_when_taken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="modelship")
    reconciler, kube, store = refused_reconciler(api_error(VAP_FORBIDDEN))
    assert reconciler.reconcile("ml", "digits") is None  # no fast retry: the next change or resync tries again
    cond = stalled(kube, store)
    assert cond["status"] == "True" and cond["reason"] == "ApplyRefused" and cond["observedGeneration"] == 3
    assert cond["message"] == f"Deployment digits refused by the API server: {VAP_FORBIDDEN['message']}"
    status = (store.get("ModelDeployment", "ml", "digits") or {})["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ApplyRefused") and status["phase"] == "Failed"
    assert status["lastFailure"]["reason"] == "ApplyRefused" and "the pod template is frozen" in status["lastFailure"][
        "message"]  # fmt: skip
    # not what the pass decided (its writes did not happen): no Deployed condition, no served revision, no Event of it
    assert not any(c["type"] == "Deployed" for c in status["conditions"]), status["conditions"]
    assert "revision" not in status and status["observedGeneration"] == 3
    assert {e[1] for e in kube.events} == {"ReadyApplyRefused"}, kube.events
    assert "Deployment" not in kube.written and "Service" not in kube.written  # stopped at the refused object
    assert ("Warning", "ReadyApplyRefused", cond["message"]) in kube.events
    assert len(refusal_warnings(caplog)) == 1
    # the same refusal at the next resync: nothing written, said or logged again
    writes, events = kube.status_writes, len(kube.events)
    assert reconciler.reconcile("ml", "digits") is None
    assert (kube.status_writes, len(kube.events), len(refusal_warnings(caplog))) == (writes, events, 1)
    assert stalled(kube, store) == cond
    # another refusal (the policy's message changed): written and logged once more
    kube.error = api_error(INVALID)
    reconciler.reconcile("ml", "digits")
    assert stalled(kube, store)["message"] == f"Deployment digits refused by the API server: {INVALID['message']}"
    assert len(refusal_warnings(caplog)) == 2
    # the policy is gone: the next pass writes everything and clears the stall
    kube.error = None
    reconciler.reconcile("ml", "digits")
    assert stalled(kube, store)["status"] == "False" and {"Deployment", "Service"} <= set(kube.written)
    assert "the API server takes its writes again" in caplog.text


def test_an_rbac_refusal_is_an_error_as_before() -> None:
    reconciler, kube, store = refused_reconciler(api_error(RBAC))
    with pytest.raises(ApiException):
        reconciler.reconcile("ml", "digits")
    assert stalled(kube, store) == {}


def test_giving_up_again_on_the_same_error_writes_nothing_new() -> None:
    reconciler, kube, store = refused_reconciler(None)
    error = ValueError("kaniko builds one platform per run")
    reconciler.give_up("ml", "digits", error, 5)
    cond = stalled(kube, store)
    assert cond["reason"] == "ReconcileError" and "ValueError: kaniko builds one platform per run" in cond["message"]
    writes, events = kube.status_writes, len(kube.events)
    reconciler.give_up("ml", "digits", ValueError("kaniko builds one platform per run"), 6)  # one more try counted
    assert (kube.status_writes, len(kube.events)) == (writes, events)
    assert stalled(kube, store) == cond
