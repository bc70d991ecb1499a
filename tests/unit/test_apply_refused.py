"""A write the API server refuses for the object's content (an admission policy or webhook denied it, or it is
invalid) ends the pass in a steady Stalled status (ApplyRefused) instead of an error retried into a give-up; a
403 of RBAC stays an error. The Status bodies are the API server's own (kube-apiserver 1.34.4, captured from the
test control plane: the webhook's from a webhook that denied a create without a status code, which the API server
answers 400; one that sets 403 says the same words; the 401, 413 and 500 ones are made from them: a policy's reason,
a webhook's code). Words are redacted; a refusal in the platform's build namespace tells its words to the log only.
A refused pass still records what the Jobs that ran made (status, revision cache), not the attempt of a Job it was
to create. A give-up says the same words for the same failure, whatever the try count."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelship.api import ModelDeployment
from modelship.config import OperatorConfig
from modelship.controller.observe import JobObservation, JobState, Observed
from modelship.controller.plan import Plan, plan
from modelship.controller.reconcile import Reconciler
from modelship.controller.stalls import REFUSAL_LIMIT, Cause, Refusal, refusal
from modelship.controller.store import Store
from modelship.resources.revision import revision
from tests.unit.test_loud_failures import MemoryKube, md_body, optimized, stalled
from tests.unit.test_plan import CONFIG, IMAGE, NOW, job, kinds, make_md, summary
from tests.unit.test_stages import BUILT

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
WEBHOOK_500 = {**WEBHOOK, "code": 500}  # a webhook may deny with any code it chooses
VAP_TOO_LARGE = {**VAP_FORBIDDEN, "reason": "RequestEntityTooLarge", "code": 413}  # a VAP's reason: 401, 403, 413, 422
VAP_UNAUTHORIZED = {**VAP_FORBIDDEN, "reason": "Unauthorized", "code": 401}
WEBHOOK_UNREACHABLE = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": 'Internal error occurred: failed calling webhook "deny.example.com": failed to call '
                                  "webhook: context deadline exceeded", "reason": "InternalError",
                       "code": 500}  # fmt: skip
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


@pytest.mark.parametrize(
    ("body", "cause"),
    [(VAP_FORBIDDEN, Cause.ADMISSION), (VAP_INVALID, Cause.ADMISSION), (VAP_TOO_LARGE, Cause.ADMISSION),
     (VAP_UNAUTHORIZED, Cause.ADMISSION), (INVALID, Cause.INVALID), (WEBHOOK, Cause.ADMISSION),
     (WEBHOOK_403, Cause.ADMISSION), (WEBHOOK_500, Cause.ADMISSION)],
    ids=["vap403", "vap422", "vap413", "vap401", "invalid", "webhook400", "webhook403", "webhook500"],
)  # fmt: skip
def test_a_refusal_for_the_objects_content_is_told_in_the_api_servers_words(body: dict[str, Any], cause: Cause) -> None:
    assert refusal(api_error(body)) == Refusal(cause, body["message"])


@pytest.mark.parametrize(
    "exc",
    [api_error(RBAC), api_error(TERMINATING), api_error({**INVALID, "reason": "Conflict", "code": 409}),
     api_error(WEBHOOK_UNREACHABLE), api_error({**INVALID, "code": 400}, 400),
     api_error("<html>bad gateway</html>", 403), api_error("", 422),
     api_error({**RBAC, "message": None}), api_error({**INVALID, "kind": "Deployment"})],
    ids=["rbac", "terminating", "conflict", "webhook-unreachable", "invalid-400", "not-json", "empty", "no-message",
         "not-a-status"],
)  # fmt: skip
def test_anything_else_is_not_a_refusal(exc: ApiException) -> None:
    assert refusal(exc) is None


def test_a_refusal_is_one_bounded_line() -> None:
    words = "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: line one\n\tline\x1b[31m two\u2028"
    words += "x" * 5000
    refused = refusal(api_error({**VAP_FORBIDDEN, "message": f'deployments.apps "d" is forbidden: {words}'}))
    assert refused is not None
    text = refused.words
    assert len(text) <= REFUSAL_LIMIT and len(text) > REFUSAL_LIMIT - 5 and text.endswith("...")
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
    # not what the pass decided of its writes (they did not happen): no Deployed condition, no served revision, no
    # Event of it; but what the optimization Job that ran found is recorded (its figures, the gate's verdict on them)
    assert not any(c["type"] == "Deployed" for c in status["conditions"]), status["conditions"]
    assert "revision" not in status and "servingRevision" not in status and status["observedGeneration"] == 3
    assert next(c for c in status["conditions"] if c["type"] == "Optimized")["status"] == "True"
    assert status["optimization"]["decision"] == "Optimized" and status["source"]["digest"]
    assert {e[1] for e in kube.events} == {"ReadyApplyRefused", "OptimizedOptimized", "ResolvedDigestResolved",
                                           "GatePassedWithinThreshold"}, kube.events  # fmt: skip
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


def refused_pass(
    jobs: list[JobObservation], kind: str, error: ApiException, config: OperatorConfig = CONFIG
) -> tuple[Reconciler, RefusingKube, Store, Plan, list[tuple[str, ...]]]:
    """One pass's plan (a ModelDeployment without status, the Jobs ``jobs`` observed) carried out against an API
    that refuses every write of ``kind``; the revision cache entries written are recorded."""
    store = Store()
    body = md_body()
    store.put("ModelDeployment", body)
    md = ModelDeployment.from_body(body)
    p = plan(md, Observed(jobs=jobs), config, NOW)
    kube = RefusingKube(store, kind, error)
    reconciler = Reconciler(kube, store, config)  # type: ignore[arg-type]
    puts: list[tuple[str, ...]] = []
    reconciler.caches.put = lambda *args: puts.append(args)  # type: ignore[method-assign]
    live: dict[tuple[str, str], dict[str, Any] | None] = {(o["kind"], o["metadata"]["name"]): None
                                                          for o in [*p.apply, *p.create]}  # fmt: skip
    assert reconciler._execute(md, body, p, live) is False
    return reconciler, kube, store, p, puts


def test_a_refused_pass_keeps_what_the_jobs_that_ran_made() -> None:
    """A build Job pushed the image; the serving Deployment with it is refused: status records the image and the
    revision cache has it, so that once the finished Job is gone (job_ttl_seconds) no build starts again."""
    rev = revision(ModelDeployment.from_body(md_body()).spec)
    done = [job("optimizer", rev, JobState.SUCCEEDED, msg=summary()),
            job("build", rev, JobState.SUCCEEDED, msg=BUILT, finished_at="2026-11-26T11:59:30Z")]  # fmt: skip
    _, kube, store, p, puts = refused_pass(done, "Deployment", api_error(VAP_FORBIDDEN))
    assert "Deployment" not in kube.written
    assert p.cache_put is not None and puts == [("ml", *p.cache_put)]  # the image exists, whatever was refused
    status = (store.get("ModelDeployment", "ml", "digits") or {})["status"]
    assert status["image"]["reference"] == IMAGE and status["image"]["attempts"] == 1
    assert status["optimization"]["decision"] == "Optimized" and status["optimization"]["revision"] == rev
    built = next(c for c in status["conditions"] if c["type"] == "ImageBuilt")
    assert (built["status"], built["reason"]) == ("True", "Pushed")
    assert stalled(kube, store)["reason"] == "ApplyRefused"
    # what tells of the writes that did not happen stays as held (nothing: a first pass)
    assert not {"revision", "servingRevision", "servingImage", "url", "rollout"} & set(status), status
    assert not any(c["type"] == "Deployed" for c in status["conditions"])
    assert ("Normal", "ImageBuiltPushed", f"image {IMAGE}") in kube.events
    # the next pass, the Jobs gone by their TTL: no build Job again, the image goes to the Deployment
    again = plan(make_md(status=status), Observed(), CONFIG, NOW)
    assert kinds(again.create) == [] and "Deployment" in kinds(again.apply)


def test_a_refused_job_create_counts_no_attempt() -> None:
    """The build Job's create is the refused write: its attempt and its JobCreated are not recorded (the next
    resync would count one more each time, then fail the stage), what the optimization Job found is."""
    rev = revision(ModelDeployment.from_body(md_body()).spec)
    _, kube, store, p, puts = refused_pass([job("optimizer", rev, JobState.SUCCEEDED, msg=summary())], "Job",
                                           api_error(WEBHOOK))  # fmt: skip
    assert kinds(p.create) == ["Job"] and puts == []
    status = (store.get("ModelDeployment", "ml", "digits") or {})["status"]
    assert "image" not in status and not any(c["type"] == "ImageBuilt" for c in status["conditions"]), status
    assert next(c for c in status["conditions"] if c["type"] == "Optimized")["status"] == "True"
    assert stalled(kube, store)["message"] == f"Job {p.create[0]['metadata']['name']} refused by the API server: " \
        f"{WEBHOOK['message']}"  # fmt: skip


def test_the_build_namespaces_words_stay_in_the_operators_log(caplog: pytest.LogCaptureFixture) -> None:
    """A build Job refused in the platform's build namespace: status and Events say the kind, the name and the
    cause, the log the words (redacted)."""
    caplog.set_level(logging.INFO, logger="modelship")
    config = replace(CONFIG, build_namespace="modelship-builds")
    words = ('admission webhook "images.platform.internal" denied the request: pushes to registry.platform.internal '
             "need password=hunter2222")  # fmt: skip
    rev = revision(ModelDeployment.from_body(md_body()).spec)
    _, kube, store, p, _ = refused_pass([job("optimizer", rev, JobState.SUCCEEDED, msg=summary())], "Job",
                                        api_error({**WEBHOOK, "message": words}), config)  # fmt: skip
    (build,) = p.create
    assert build["metadata"]["namespace"] == "modelship-builds"
    name = build["metadata"]["name"]
    expected = (f"Job {name} refused by the API server (admission); it runs in the platform's build namespace: the "
                "operator's log says more")  # fmt: skip
    assert stalled(kube, store)["message"] == expected
    status = (store.get("ModelDeployment", "ml", "digits") or {})["status"]
    told = json.dumps(status) + json.dumps(kube.events)
    assert "platform.internal" not in told and "hunter2222" not in told
    (logged,) = refusal_warnings(caplog)
    assert f"Job modelship-builds/{name} refused by the API server: admission webhook" in logged
    assert "registry.platform.internal need password=[redacted]" in logged and "hunter2222" not in logged


def test_the_tenants_own_refusal_is_redacted() -> None:
    """A webhook's words may echo the object (an environment variable, a Secret's data): redacted in status."""
    words = 'admission webhook "env.example.com" denied the request: env API_TOKEN=abcdef123456 is not allowed'
    reconciler, kube, store = refused_reconciler(api_error({**WEBHOOK, "message": words}))
    reconciler.reconcile("ml", "digits")
    message = stalled(kube, store)["message"]
    assert message.endswith("denied the request: env API_TOKEN=[redacted] is not allowed"), message
    assert "abcdef123456" not in json.dumps(store.get("ModelDeployment", "ml", "digits")) + json.dumps(kube.events)


def test_only_a_service_refused_as_invalid_is_reclaimed() -> None:
    """A Service another manager edited into an invalid apply gets its spec set as rendered (lists whole); never a
    Deployment (its spec without the autoscaler's replicas would scale it), never an admission denial (a policy
    refusing it refuses the spec too, and must be told)."""
    from modelship.controller.reconcile import reclaimable

    service, deployment = {"kind": "Service"}, {"kind": "Deployment"}
    assert reclaimable(service, api_error(INVALID))
    assert not reclaimable(deployment, api_error(INVALID))
    assert not reclaimable(service, api_error(VAP_FORBIDDEN))
    assert not reclaimable(service, api_error(RBAC))


def test_setting_a_spec_replaces_each_field_whole_at_the_version_read() -> None:
    from modelship.controller.kube import Kube

    sent: list[tuple[str, str, Any, Any]] = []

    class Recording(Kube):
        def __init__(self) -> None:
            pass

        def _call(self, method: str, path: str, body: Any = None, query: Any = None, **kw: Any) -> dict[str, Any]:
            sent.append((method, path, body, kw.get("content_type")))
            return {"metadata": {"name": "digits"}}

    current = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "ml", "name": "digits",
               "resourceVersion": "42"}, "spec": {"clusterIP": "10.96.0.7"}}  # fmt: skip
    Recording().set_spec(current, {"ports": [{"name": "http", "port": 8080}], "a/b~c": 1})
    method, path, ops, content_type = sent[0]
    assert (method, path, content_type) == (
        "PATCH",
        "/api/v1/namespaces/ml/services/digits",
        "application/json-patch+json",
    )
    assert ops == [{"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
                   {"op": "add", "path": "/spec/ports", "value": [{"name": "http", "port": 8080}]},
                   {"op": "add", "path": "/spec/a~1b~0c", "value": 1}]  # fmt: skip


def test_setting_a_spec_on_a_version_changed_since_is_judged_again() -> None:
    """The API server's answer to a failed test op (json-patch, kube-apiserver 1.34): a 422, not a 409."""
    from modelship.controller.kube import Kube, PreconditionFailed

    class Stale(Kube):
        def __init__(self) -> None:
            pass

        def _call(self, method: str, path: str, body: Any = None, query: Any = None, **kw: Any) -> dict[str, Any]:
            raise api_error({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": "testing value /metadata/resourceVersion failed: test failed",
                             "reason": "Invalid", "code": 422})  # fmt: skip

    current = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "ml", "name": "digits",
               "resourceVersion": "42"}, "spec": {}}  # fmt: skip
    with pytest.raises(PreconditionFailed):
        Stale().set_spec(current, {"ports": []})
