"""A Secret, ConfigMap or claim a stage Job would mount that does not exist: the pure decision
(controller/stages/mounts.py, resources/mounted.py). No Job, the stage's condition False SecretNotFound /
ConfigMapNotFound / ClaimNotFound naming the object, its field and the namespace, Stalled with the same reason, one
Warning Event per condition change, a backoff, and the Job once the object exists."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelship.api import ModelDeployment
from modelship.config import OperatorConfig
from modelship.controller import prejob
from modelship.controller.observe import JobState, Observed
from modelship.controller.once import Once
from modelship.controller.plan import Plan, plan
from modelship.controller.prejob import SERVING_MOUNTS_RECHECK_SECONDS, ServingMounts, missing_mounts
from modelship.controller.reconcile import Reconciler
from modelship.controller.stages.context import Context
from modelship.controller.stages.deploy import ServingTarget, deploy
from modelship.controller.stages.mounts import RECHECK_MAX_SECONDS, RECHECK_MIN_SECONDS
from modelship.controller.store import Store
from modelship.resources.build_job import build_job
from modelship.resources.kinds import SECRET
from modelship.resources.mounted import mounted, mounted_fields, mounted_key_fields, mounted_keys, mounted_objects
from modelship.resources.optimize_job import optimize_job
from modelship.resources.revision import revision
from modelship.resources.serving import ServedArtifact
from tests.support.specs import valid_doc
from tests.unit.test_loud_failures import MemoryKube, md_body, stalled
from tests.unit.test_plan import CONFIG, IMAGE, NOW, cond, deployment, job, make_md, summary

CREDS = {"secretRef": {"name": "model-creds"}}
DATA = {
    "calibration": {"uri": "s3://data/train.npz", "format": "npz", "credentials": {"secretRef": {"name": "shared"}}},
    "evaluation": {"uri": "s3://data/test.npz", "format": "npz", "credentials": {"secretRef": {"name": "shared"}}},
}


def sourced(**build: Any) -> ModelDeployment:
    """Model and both data sets behind Secrets (one shared by the two data sets)."""
    doc = valid_doc()
    doc["metadata"].update(namespace="ml", uid="u-1", generation=4)
    doc["spec"]["model"] = {"uri": "s3://models/cnn.h5", "format": "h5", "credentials": CREDS}
    doc["spec"]["optimization"]["data"] = DATA
    doc["spec"]["build"].update(build)
    return ModelDeployment.from_body(doc)


def written(md: ModelDeployment, status: dict[str, Any]) -> ModelDeployment:
    """``md`` as the API server has it once ``status`` is written."""
    return md.model_copy(update={"status": md.status.model_validate(status)})


def test_the_secrets_a_job_mounts_are_read_from_its_manifest_and_each_has_its_fields() -> None:
    md = sourced(pushSecretRef={"name": "push"})
    rev = revision(md.spec)
    assert mounted(optimize_job(md, rev, CONFIG), SECRET) == ("model-creds", "shared")  # an image is built: no push
    fields = mounted_fields(md)
    assert {ref: f for ref, f in fields.items() if ref[0] == "Secret"} == {
        ("Secret", "model-creds"): ("spec.model.credentials.secretRef.name",),
        ("Secret", "shared"): (
            "spec.optimization.data.evaluation.credentials.secretRef.name",
            "spec.optimization.data.calibration.credentials.secretRef.name",
        ),
        ("Secret", "push"): ("spec.build.pushSecretRef.name",),
    }
    # build-less with a repository: the optimization Job pushes the artifact with the push Secret
    unbuilt = sourced(enabled=False, pushSecretRef={"name": "push"})
    assert mounted(optimize_job(unbuilt, revision(unbuilt.spec), CONFIG), SECRET) == ("model-creds", "shared", "push")
    # the build Job in the tenant's namespace (no build namespace) mounts the tenant's push Secret
    digest = "sha256:" + "ef" * 32
    assert mounted(build_job(md, rev, digest, CONFIG), SECRET) == ("push",)
    # in the operator's build namespace it mounts the platform's, never the tenant's
    platform = OperatorConfig(build_namespace="builds", build_push_secrets={"registry.local:5000": "platform-push"})
    assert mounted(build_job(md, rev, digest, platform), SECRET) == ("platform-push",)
    assert mounted_objects({"spec": {"template": {"spec": {"volumes": [
        {"name": "p", "projected": {"sources": [{"secret": {"name": "a"}}, {"configMap": {"name": "c"}}]}},
        {"name": "o", "secret": {"secretName": "maybe", "optional": True}},
        {"name": "q", "configMap": {"name": "perhaps", "optional": True}},
        {"name": "v", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "w", "configMap": {"name": "c"}},
    ]}}}}) == (("Secret", "a"), ("ConfigMap", "c"), ("PersistentVolumeClaim", "data"))  # fmt: skip


def with_cas_and_code(doc: dict[str, Any]) -> ModelDeployment:
    """``doc`` (pvc:// model and data sets) with a CA bundle for the model and the evaluation set, one shared
    ConfigMap for the model's and the calibration set's, and a custom metric's code."""
    doc["metadata"].update(namespace="ml", uid="u-1", generation=4)
    spec = doc["spec"]
    spec["model"]["credentials"] = {"caBundleRef": {"name": "corp-ca", "key": "ca.pem"}}
    spec["model"]["allowCode"] = True
    data = spec["optimization"]["data"]
    data["evaluation"]["credentials"] = {"caBundleRef": {"name": "eval-ca", "key": "ca.crt"}}
    data["calibration"]["credentials"] = {"caBundleRef": {"name": "corp-ca", "key": "ca.pem"}}
    spec["optimization"]["metric"] = {"type": "custom", "callable": "mymetric:score", "codeRef": {"name": "metric"}}
    return ModelDeployment.from_body(doc)


def test_the_configmaps_and_claims_a_job_mounts_are_read_from_its_manifest_and_each_has_its_fields() -> None:
    md = with_cas_and_code(valid_doc())
    job_manifest = optimize_job(md, revision(md.spec), CONFIG)
    assert mounted_objects(job_manifest) == (
        ("PersistentVolumeClaim", "digits-artifacts"),  # the operator's own claim, which it applies first
        ("PersistentVolumeClaim", "models"),
        ("ConfigMap", "corp-ca"),
        ("ConfigMap", "eval-ca"),
        ("ConfigMap", "metric"),
    )
    fields = mounted_fields(md)
    assert fields[("ConfigMap", "corp-ca")] == (
        "spec.model.credentials.caBundleRef.name",
        "spec.optimization.data.calibration.credentials.caBundleRef.name",
    )
    assert fields[("ConfigMap", "eval-ca")] == ("spec.optimization.data.evaluation.credentials.caBundleRef.name",)
    assert fields[("ConfigMap", "metric")] == ("spec.optimization.metric.codeRef.name",)
    assert fields[("PersistentVolumeClaim", "models")] == (
        "spec.model.uri",
        "spec.optimization.data.evaluation.uri",
        "spec.optimization.data.calibration.uri",
    )


def test_a_missing_configmap_stalls_the_optimization_naming_its_fields() -> None:
    md = with_cas_and_code(valid_doc())
    missing = frozenset({("ConfigMap", "ml", "corp-ca"), ("ConfigMap", "ml", "metric")})
    p = plan(md, Observed(missing_mounts=missing), CONFIG, NOW)
    assert p.create == []
    optimized = cond(p.status, "Optimized")
    assert (optimized["status"], optimized["reason"]) == ("False", "ConfigMapNotFound")
    message = optimized["message"]
    assert message.startswith(
        'ConfigMap "corp-ca" (spec.model.credentials.caBundleRef.name, '
        "spec.optimization.data.calibration.credentials.caBundleRef.name); "
        'ConfigMap "metric" (spec.optimization.metric.codeRef.name) not found in namespace ml'
    ), message
    assert "eval-ca" not in message  # only what is missing
    assert (cond(p.status, "Stalled")["status"], cond(p.status, "Stalled")["reason"]) == ("True", "ConfigMapNotFound")
    warnings = [e.reason for e in p.events if e.type == "Warning"]
    assert warnings == ["OptimizedConfigMapNotFound", "ReadyConfigMapNotFound"]
    assert p.requeue_after == RECHECK_MIN_SECONDS
    # the same ConfigMap in another namespace says nothing about this one
    elsewhere = frozenset({("ConfigMap", "other", "corp-ca")})
    assert [o["kind"] for o in plan(md, Observed(missing_mounts=elsewhere), CONFIG, NOW).create] == ["Job"]


def test_a_missing_claim_stalls_the_optimization_then_the_job_once_it_exists() -> None:
    md = make_md()
    p = plan(md, Observed(missing_mounts=frozenset({("PersistentVolumeClaim", "ml", "models")})), CONFIG, NOW)
    assert p.create == []
    optimized = cond(p.status, "Optimized")
    assert (optimized["status"], optimized["reason"]) == ("False", "ClaimNotFound")
    assert optimized["message"].startswith(
        'claim "models" (spec.model.uri, spec.optimization.data.evaluation.uri, '
        "spec.optimization.data.calibration.uri) not found in namespace ml"
    ), optimized["message"]
    assert p.status["lastFailure"]["reason"] == "ClaimNotFound"
    # the operator does not apply the artifact claim for a Job it does not create
    assert not [o for o in p.apply if o["kind"] == "PersistentVolumeClaim"]
    # a missing Secret is named first (its reason), every missing object in the message
    both = frozenset({("PersistentVolumeClaim", "ml", "models"), ("Secret", "ml", "model-creds")})
    creds = make_md(model={"uri": "pvc://models/digits/cnn.h5", "format": "h5", "credentials": CREDS})
    mixed = cond(plan(creds, Observed(missing_mounts=both), CONFIG, NOW).status, "Optimized")
    assert mixed["reason"] == "SecretNotFound"
    assert mixed["message"].index('Secret "model-creds"') < mixed["message"].index('claim "models"')
    # looked again later and later while it waits; the Job once the claim exists
    stalled = written(md, p.status)
    again = plan(stalled, Observed(missing_mounts=frozenset({("PersistentVolumeClaim", "ml", "models")})), CONFIG,
                 NOW + timedelta(seconds=40))  # fmt: skip
    assert again.create == [] and again.events == [] and again.requeue_after == 40.0
    later = plan(stalled, Observed(), CONFIG, NOW + timedelta(seconds=60))
    assert [o["kind"] for o in later.create] == ["Job"]
    assert cond(later.status, "Optimized")["reason"] == "JobCreated"


def test_a_missing_source_secret_stalls_the_optimization_without_a_job() -> None:
    md = sourced()
    p = plan(md, Observed(missing_mounts=frozenset({("Secret", "ml", "shared")})), CONFIG, NOW)
    assert p.create == []
    s = p.status
    optimized = cond(s, "Optimized")
    assert (optimized["status"], optimized["reason"]) == ("False", "SecretNotFound")
    message = optimized["message"]
    assert 'Secret "shared"' in message and "namespace ml" in message
    assert "spec.optimization.data.calibration.credentials.secretRef.name" in message
    assert "spec.optimization.data.evaluation.credentials.secretRef.name" in message
    assert "model-creds" not in message  # only what is missing
    assert (cond(s, "Stalled")["status"], cond(s, "Stalled")["reason"]) == ("True", "SecretNotFound")
    assert cond(s, "Stalled")["message"] == message
    assert (cond(s, "Ready")["status"], cond(s, "Reconciling")["status"]) == ("False", "False")
    assert s["phase"] == "Failed"
    assert s["lastFailure"]["stage"] == "Optimize" and s["lastFailure"]["reason"] == "SecretNotFound"
    warnings = [e for e in p.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == ["OptimizedSecretNotFound", "ReadySecretNotFound"]
    assert p.requeue_after == RECHECK_MIN_SECONDS


def test_the_same_stall_posts_nothing_again_and_looks_again_later_and_later() -> None:
    md = sourced()
    missing = Observed(missing_mounts=frozenset({("Secret", "ml", "model-creds")}))
    first = plan(md, missing, CONFIG, NOW)
    for waited, expected in ((40, 40.0), (2, RECHECK_MIN_SECONDS), (10_000, RECHECK_MAX_SECONDS)):
        stalled = written(md, first.status)  # what the first reconcile wrote
        again = plan(stalled, missing, CONFIG, NOW + timedelta(seconds=waited))
        assert again.create == [] and again.events == []
        assert again.requeue_after == expected
        assert (
            cond(again.status, "Optimized")["lastTransitionTime"]
            == cond(first.status, "Optimized")["lastTransitionTime"]
        )
    # the Secret exists now: the Job is created, the resource Reconciling again
    stalled = written(md, first.status)
    later = plan(stalled, Observed(), CONFIG, NOW + timedelta(seconds=60))
    assert [o["kind"] for o in later.create] == ["Job"]
    assert cond(later.status, "Optimized")["reason"] == "JobCreated"
    assert cond(later.status, "Stalled")["status"] == "False"


def test_a_missing_push_secret_stalls_the_build_after_the_optimization() -> None:
    md = sourced(pushSecretRef={"name": "push"})
    rev = revision(md.spec)
    done = [job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]
    p = plan(md, Observed(jobs=done, missing_mounts=frozenset({("Secret", "ml", "push")})), CONFIG, NOW)
    assert p.create == []
    built = cond(p.status, "ImageBuilt")
    assert (built["status"], built["reason"]) == ("False", "SecretNotFound")
    assert 'Secret "push" (spec.build.pushSecretRef.name) not found in namespace ml' in built["message"]
    assert cond(p.status, "Optimized")["status"] == "True"
    assert p.status["lastFailure"]["stage"] == "Build"
    # a Secret of another namespace of that name says nothing about this one
    other = plan(md, Observed(jobs=done, missing_mounts=frozenset({("Secret", "elsewhere", "push")})), CONFIG, NOW)
    assert [o["kind"] for o in other.create] == ["Job"]


def test_suspended_creates_nothing_and_asks_for_nothing() -> None:
    md = make_md(model={"uri": "s3://models/cnn.h5", "format": "h5", "credentials": CREDS}, suspend=True)
    p = plan(md, Observed(missing_mounts=frozenset({("Secret", "ml", "model-creds")})), CONFIG, NOW)
    assert p.create == [] and p.status["phase"] == "Suspended"
    assert cond(p.status, "Optimized")["reason"] == "Suspended"


class CheckingKube(MemoryKube):
    """An in-memory API that answers the existence checks: some objects absent, some kinds forbidden (a Role that
    lacks get on them, as an older chart's)."""

    def __init__(self, store: Store, absent: set[tuple[str, str]], forbidden: frozenset[str] = frozenset()) -> None:
        super().__init__(store)
        self.absent, self.forbidden = absent, forbidden
        self.asked: list[tuple[str, str, str]] = []
        self.read: list[tuple[str, str]] = []
        self.deleting: set[tuple[str, str]] = set()
        """Objects that exist with a deletionTimestamp (a claim held by its protection finalizer)."""
        self.keys: dict[str, tuple[str, ...]] = {}
        """The keys of each ConfigMap that exists (default: a CA bundle's ca.pem)."""
        self.created: list[dict[str, Any]] = []

    def exists(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.asked.append((kind, namespace, name))
        if kind in self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        return (kind, name) not in self.absent

    def metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = super().metadata(api_version, kind, namespace, name)
        if found is not None and (kind, name) in self.deleting:
            found["metadata"]["deletionTimestamp"] = "2026-11-26T11:59:00Z"
        return found

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind != "ConfigMap":
            return super().get(api_version, kind, namespace, name)
        self.read.append((namespace, name))  # a ConfigMap read whole (its keys), not only asked for
        if not self.exists(api_version, kind, namespace, name):
            return None
        return {"kind": kind, "metadata": {"name": name}, "data": dict.fromkeys(self.keys.get(name, ("ca.pem",)), "")}

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.created.append(obj)
        return obj


def reconciled(absent: set[tuple[str, str]], forbidden: frozenset[str] = frozenset()) -> tuple[CheckingKube, Store]:
    doc = md_body()
    doc["spec"]["model"]["credentials"] = {"caBundleRef": {"name": "corp-ca", "key": "ca.pem"}}
    store = Store()
    store.put("ModelDeployment", doc)
    kube = CheckingKube(store, absent, forbidden)
    Reconciler(kube, store, CONFIG).reconcile("ml", "digits")  # type: ignore[arg-type]
    return kube, store


def test_the_reconcile_asks_for_each_mounted_object_but_the_claim_it_applies_itself() -> None:
    kube, store = reconciled({("ConfigMap", "corp-ca")})
    # by existence, each once; not the artifact claim, which the same plan applies before creating the Job
    assert sorted(kube.asked) == [("ConfigMap", "ml", "corp-ca"), ("PersistentVolumeClaim", "ml", "models")]
    assert [o["kind"] for o in kube.created] == []
    assert stalled(kube, store)["reason"] == "ConfigMapNotFound"
    present, _ = reconciled(set())
    assert [o["kind"] for o in present.created] == ["PersistentVolumeClaim", "Job"]  # the claim first


def test_a_role_without_get_on_a_kind_checks_nothing_of_that_kind_and_creates_the_job() -> None:
    kube, store = reconciled({("ConfigMap", "corp-ca")}, forbidden=frozenset({"ConfigMap"}))
    assert ("ConfigMap", "ml", "corp-ca") in kube.asked  # asked once, refused: as before the check existed
    assert [o["kind"] for o in kube.created] == ["PersistentVolumeClaim", "Job"]
    assert stalled(kube, store).get("status") != "True"
    # a kind it may read is still checked
    kube, store = reconciled({("PersistentVolumeClaim", "models")}, forbidden=frozenset({"ConfigMap"}))
    assert kube.created == [] and stalled(kube, store)["reason"] == "ClaimNotFound"


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "cannot check" in r.getMessage()]


def test_a_role_without_get_on_a_kind_is_warned_of_once_per_kind_and_process_not_every_reconcile(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(prejob, "FORBIDDEN", Once())  # the process's memory, fresh for this test
    caplog.set_level(logging.DEBUG, logger="modelship.reconcile")
    both = frozenset({"ConfigMap", "PersistentVolumeClaim"})
    for _ in range(3):  # three reconciles, each of a new Reconciler (as after a restart of the watches)
        kube, store = reconciled({("ConfigMap", "corp-ca")}, forbidden=both)
        # still asked and still skipped every time: the Job is created, nothing is stalled
        assert sorted(kube.asked) == [("ConfigMap", "ml", "corp-ca"), ("PersistentVolumeClaim", "ml", "models")]
        assert [o["kind"] for o in kube.created] == ["PersistentVolumeClaim", "Job"]
        assert stalled(kube, store).get("status") != "True"
    said = _refusals(caplog)
    assert len(said) == 2, said  # once per kind
    assert "cannot check ConfigMap corp-ca (forbidden)" in said[0] and "lacks get on ConfigMaps" in said[0]
    assert "cannot check PersistentVolumeClaim models (forbidden)" in said[1]
    # the Role is fixed for ConfigMaps (a check of one succeeds), then refuses again: that is said again
    caplog.clear()
    reconciled(set(), forbidden=frozenset({"PersistentVolumeClaim"}))
    assert _refusals(caplog) == []
    reconciled(set(), forbidden=both)
    assert [m.split(": ")[1] for m in _refusals(caplog)] == ["cannot check ConfigMap corp-ca (forbidden)"]


def test_the_objects_a_pods_environment_names_and_the_configmap_keys_it_mounts_as_files_are_listed() -> None:
    manifest = {"spec": {"template": {"spec": {
        "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
        "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "settings"}},
                                                 {"secretRef": {"name": "maybe", "optional": True}}],
                        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "token", "key": "t"}}},
                                {"name": "L", "valueFrom": {"configMapKeyRef": {"name": "level", "key": "l"}}},
                                {"name": "O", "valueFrom": {"configMapKeyRef": {"name": "o", "key": "o",
                                                                                "optional": True}}},
                                {"name": "P", "value": "plain"}]}],
        "volumes": [
            {"name": "ca", "configMap": {"name": "corp-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]}},
            {"name": "p", "projected": {"sources": [
                {"configMap": {"name": "more", "items": [{"key": "k", "path": "k"}]}}]}},
            {"name": "o", "configMap": {"name": "opt", "optional": True, "items": [{"key": "x", "path": "x"}]}},
            {"name": "s", "secret": {"secretName": "push", "items": [{"key": ".dockerconfigjson", "path": "c.json"}]}},
            {"name": "whole", "configMap": {"name": "code"}},
        ],
    }}}}  # fmt: skip
    assert mounted_objects(manifest) == (
        ("ConfigMap", "corp-ca"), ("ConfigMap", "more"), ("Secret", "push"), ("ConfigMap", "code"),
        ("Secret", "init-env"), ("ConfigMap", "settings"), ("Secret", "token"), ("ConfigMap", "level"),
    )  # fmt: skip
    # only ConfigMap keys (never a Secret's), only of volumes that name items and are not optional
    assert mounted_keys(manifest) == (("corp-ca", "ca.pem"), ("more", "k"))
    md = with_cas_and_code(valid_doc())
    assert mounted_keys(optimize_job(md, revision(md.spec), CONFIG)) == (("corp-ca", "ca.pem"), ("eval-ca", "ca.crt"))
    assert mounted_key_fields(md) == {
        ("corp-ca", "ca.pem"): ("spec.model.credentials.caBundleRef.key",
                                "spec.optimization.data.calibration.credentials.caBundleRef.key"),
        ("eval-ca", "ca.crt"): ("spec.optimization.data.evaluation.credentials.caBundleRef.key",),
    }  # fmt: skip


def test_a_ca_bundle_key_its_configmap_lacks_stalls_the_optimization_naming_key_field_and_configmap() -> None:
    md = with_cas_and_code(valid_doc())
    keys = frozenset({("ml", "corp-ca", "ca.pem")})
    p = plan(md, Observed(missing_keys=keys), CONFIG, NOW)
    assert p.create == []  # the kubelet would fail the mount: the pod would wait in ContainerCreating
    optimized = cond(p.status, "Optimized")
    assert (optimized["status"], optimized["reason"]) == ("False", "ConfigMapKeyNotFound")
    assert optimized["message"].startswith(
        'key "ca.pem" (spec.model.credentials.caBundleRef.key, '
        'spec.optimization.data.calibration.credentials.caBundleRef.key) not in ConfigMap "corp-ca" in namespace ml'
    ), optimized["message"]
    stalled_on = cond(p.status, "Stalled")
    assert (stalled_on["status"], stalled_on["reason"]) == ("True", "ConfigMapKeyNotFound")
    assert [e.reason for e in p.events if e.type == "Warning"] == ["OptimizedConfigMapKeyNotFound",
                                                                   "ReadyConfigMapKeyNotFound"]  # fmt: skip
    assert p.requeue_after == RECHECK_MIN_SECONDS
    # a missing ConfigMap is said first (its reason), the missing key after it
    both = plan(md, Observed(missing_keys=keys, missing_mounts=frozenset({("ConfigMap", "ml", "metric")})), CONFIG,
                NOW)  # fmt: skip
    mixed = cond(both.status, "Optimized")
    assert mixed["reason"] == "ConfigMapNotFound"
    assert mixed["message"].startswith(
        'ConfigMap "metric" (spec.optimization.metric.codeRef.name) not found; key "ca.pem"'
    ), mixed["message"]
    # looked again later and later; the Job once the key is there
    again = plan(written(md, p.status), Observed(missing_keys=keys), CONFIG, NOW + timedelta(seconds=30))
    assert again.create == [] and again.events == [] and again.requeue_after == 30.0
    later = plan(written(md, p.status), Observed(), CONFIG, NOW + timedelta(seconds=60))
    assert [o["kind"] for o in later.create] == ["Job"]


def test_the_reconcile_reads_a_ca_bundles_configmap_for_its_keys_and_stalls_without_the_key() -> None:
    doc = md_body()
    doc["spec"]["model"]["credentials"] = {"caBundleRef": {"name": "corp-ca", "key": "ca.pem"}}
    store = Store()
    store.put("ModelDeployment", doc)
    kube = CheckingKube(store, set())
    kube.keys = {"corp-ca": ("tls.crt",)}  # the ConfigMap exists, with another key
    Reconciler(kube, store, CONFIG).reconcile("ml", "digits")  # type: ignore[arg-type]
    assert kube.read == [("ml", "corp-ca")]  # read once, for its keys
    assert kube.created == []
    said = stalled(kube, store)
    assert said["reason"] == "ConfigMapKeyNotFound"
    for words in ('key "ca.pem"', "spec.model.credentials.caBundleRef.key", 'ConfigMap "corp-ca"', "namespace ml"):
        assert words in said["message"], said["message"]
    kube.keys = {"corp-ca": ("ca.pem",)}
    Reconciler(kube, store, CONFIG).reconcile("ml", "digits")  # type: ignore[arg-type]
    assert [o["kind"] for o in kube.created] == ["PersistentVolumeClaim", "Job"]


OLD = "r0123456789"
CLAIM = frozenset({("PersistentVolumeClaim", "ml", "digits-artifacts")})


def served_from_the_claim() -> tuple[ModelDeployment, Observed]:
    """A build-less ModelDeployment (no artifact registry: the pods mount the artifact claim) whose revision
    ``OLD`` serves while the spec's new revision has just been optimized."""
    md = make_md(build=False, status={"servingRevision": OLD, "revision": OLD})
    done = [job("optimizer", revision(md.spec), JobState.SUCCEEDED, msg=summary())]
    return md, Observed(jobs=done, deployment=deployment(OLD, CONFIG.images.serving))


def test_a_rollout_whose_artifact_claim_is_gone_keeps_the_deployment_that_serves_then_goes_on() -> None:
    md, seen = served_from_the_claim()
    rev = revision(md.spec)
    p = plan(md, replace(seen, missing_mounts=CLAIM), CONFIG, NOW)
    # the Deployment is not applied (its pods could not start; the old ones keep serving), nor the claim made afresh
    assert [o["kind"] for o in p.apply] == ["Service", "PodDisruptionBudget"]
    deployed = cond(p.status, "Deployed")
    assert (deployed["status"], deployed["reason"]) == ("False", "ClaimNotFound")
    for words in ('claim "digits-artifacts"', "artifact claim", "namespace ml", f"rollout of revision {rev}"):
        assert words in deployed["message"], deployed["message"]
    assert (cond(p.status, "Stalled")["status"], cond(p.status, "Stalled")["reason"]) == ("True", "ClaimNotFound")
    assert cond(p.status, "Optimized")["status"] == "True"
    assert p.status["servingRevision"] == OLD and p.status["lastFailure"]["stage"] == "Deploy"
    assert p.requeue_after == RECHECK_MIN_SECONDS
    assert [e.reason for e in p.events if e.type == "Warning"] == ["DeployedClaimNotFound", "ReadyClaimNotFound"]
    # still gone a while later: nothing new posted, looked at later and later
    again = plan(written(md, p.status), replace(seen, missing_mounts=CLAIM), CONFIG, NOW + timedelta(seconds=90))
    assert "Deployment" not in [o["kind"] for o in again.apply] and again.events == [] and again.requeue_after == 90.0
    # the claim is back: the rollout goes on by itself
    later = plan(written(md, p.status), seen, CONFIG, NOW + timedelta(seconds=100))
    (dep,) = [o for o in later.apply if o["kind"] == "Deployment"]
    assert dep["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == rev
    assert cond(later.status, "Deployed")["reason"] == "RollingOut"
    assert cond(later.status, "Stalled")["status"] == "False"


def pull_served() -> tuple[ModelDeployment, str, ServedArtifact]:
    """Build disabled, the artifact pushed to a registry: the serving pods pull it with the push Secret."""
    doc = valid_doc()
    doc["metadata"].update(namespace="ml", uid="u-1", generation=4)
    doc["spec"]["build"] = {"enabled": False, "repository": "registry.local:5000/ml/digits",
                            "pushSecretRef": {"name": "push"}}  # fmt: skip
    md = ModelDeployment.from_body(doc)
    artifact = ServedArtifact("oci://registry.local:5000/ml/digits@sha256:" + "0a" * 32, "sha256:" + "ef" * 32)
    return md, revision(md.spec), artifact


def test_a_pushed_artifacts_pull_secret_gone_holds_the_rollout_naming_the_field() -> None:
    md, rev, artifact = pull_served()
    c = Context(md, rev, Observed(missing_mounts=frozenset({("Secret", "ml", "push")})), CONFIG, NOW)
    out = deploy(c, ServingTarget(rev, None, artifact))
    assert "Deployment" not in [o["kind"] for o in out.effects.apply]
    (deployed,) = [u for u in out.effects.conditions if u.type.value == "Deployed"]
    assert deployed.reason.value == "SecretNotFound"
    assert 'Secret "push" (spec.build.pushSecretRef.name) not found in namespace ml' in deployed.message
    assert out.effects.failure is not None and out.serving_revision is None
    # an image-built revision mounts nothing the tenant names: nothing held
    built = deploy(c, ServingTarget(rev, IMAGE))
    assert "Deployment" in [o["kind"] for o in built.effects.apply] and built.effects.failure is None


def test_the_reconcile_asks_for_the_claim_the_serving_pods_mount_and_never_makes_it() -> None:
    md, seen = served_from_the_claim()
    store = Store()
    kube = CheckingKube(store, {("PersistentVolumeClaim", "digits-artifacts")})
    p = plan(md, seen, CONFIG, NOW)
    missing = prejob.missing_mounts(kube, md, p)  # type: ignore[arg-type]
    assert kube.asked == [("PersistentVolumeClaim", "ml", "digits-artifacts")]
    assert missing.objects == CLAIM and missing.keys == frozenset()
    # a claim being deleted (held while the old pods mount it) is missing too: no new pod can mount it
    kube = CheckingKube(store, set())
    assert not prejob.missing_mounts(kube, md, p)  # type: ignore[arg-type]
    kube.deleting = {("PersistentVolumeClaim", "digits-artifacts")}
    assert prejob.missing_mounts(kube, md, p).objects == CLAIM  # type: ignore[arg-type]
    message = cond(plan(md, replace(seen, missing_mounts=CLAIM), CONFIG, NOW).status, "Deployed")["message"]
    assert message.endswith("(a claim being deleted does not count: no new pod can mount it)"), message
    # an image-built revision's Deployment mounts nothing: only the new revision's Job's pvc:// claim is asked (the
    # artifact claim the same plan applies for the Job is not)
    kube.asked.clear()
    built = make_md(status={"servingRevision": OLD, "servingImage": IMAGE})
    assert not prejob.missing_mounts(kube, built, plan(built, Observed(), CONFIG, NOW))  # type: ignore[arg-type]
    assert kube.asked == [("PersistentVolumeClaim", "ml", "models")]


def owned_claim(deleting: bool = False, uid: str = "u-1") -> dict[str, Any]:
    """The artifact claim as the operator's watch mirrors it in the store."""
    meta: dict[str, Any] = {"name": "digits-artifacts", "namespace": "ml",
                            "ownerReferences": [{"kind": "ModelDeployment", "name": "digits", "uid": uid,
                                                 "controller": True}]}  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = "2026-11-26T11:59:00Z"
    return {"kind": "PersistentVolumeClaim", "metadata": meta}


def test_the_claim_the_serving_pods_mount_is_read_from_the_store_not_asked_every_reconcile() -> None:
    md, seen = served_from_the_claim()
    p = plan(md, seen, CONFIG, NOW)
    store = Store()
    store.put("PersistentVolumeClaim", owned_claim())
    before = CheckingKube(store, set())  # without the memory (as before): one metadata GET per reconcile
    for _ in range(10):
        assert not missing_mounts(before, md, p)  # type: ignore[arg-type]
    assert before.asked == [("PersistentVolumeClaim", "ml", "digits-artifacts")] * 10
    kube = CheckingKube(store, set())
    serving = ServingMounts(store)
    for _ in range(10):
        assert not missing_mounts(kube, md, p, serving)  # type: ignore[arg-type]
    assert kube.asked == []  # the operator's own claim, mirrored by its watch: no GET
    # being deleted (the watch brings the deletionTimestamp): missing at once, still without a GET
    store.put("PersistentVolumeClaim", owned_claim(deleting=True))
    assert missing_mounts(kube, md, p, serving).objects == CLAIM and kube.asked == []  # type: ignore[arg-type]
    # gone from the store: asked (gone indeed; or a claim a user restored without the operator's labels: there)
    store.remove("PersistentVolumeClaim", "ml", "digits-artifacts")
    kube.absent = {("PersistentVolumeClaim", "digits-artifacts")}
    assert missing_mounts(kube, md, p, serving).objects == CLAIM  # type: ignore[arg-type]
    kube.absent = set()
    assert not missing_mounts(kube, md, p, serving)  # type: ignore[arg-type]
    assert kube.asked == [("PersistentVolumeClaim", "ml", "digits-artifacts")] * 2
    # a claim of that name another ModelDeployment (another uid) controls is not taken on the store's word
    store.put("PersistentVolumeClaim", owned_claim(uid="u-other"))
    kube.absent = {("PersistentVolumeClaim", "digits-artifacts")}
    assert missing_mounts(kube, md, p, ServingMounts(store)).objects == CLAIM  # type: ignore[arg-type]
    assert len(kube.asked) == 3


def pulled() -> tuple[ModelDeployment, Plan]:
    """``pull_served``'s ModelDeployment and the plan that applies its serving Deployment (mounting the Secret)."""
    md, rev, artifact = pull_served()
    out = deploy(Context(md, rev, Observed(), CONFIG, NOW), ServingTarget(rev, None, artifact))
    return md, Plan(status={}, apply=out.effects.apply)


def with_annotation(p: Plan, value: str) -> Plan:
    """``p`` with another pod template for the serving Deployment (an annotation changed)."""
    apply = []
    for o in p.apply:
        if o["kind"] == "Deployment":
            template = o["spec"]["template"]
            meta = {**template["metadata"], "annotations": {"example.com/rolled": value}}
            o = {**o, "spec": {**o["spec"], "template": {**template, "metadata": meta}}}
        apply.append(o)
    return replace(p, apply=apply)


def test_the_serving_deployments_pull_secret_is_asked_when_its_template_changes_or_once_a_minute() -> None:
    md, p = pulled()
    secret = ("Secret", "ml", "push")
    store = Store()
    before = CheckingKube(store, set())  # without the memory (as before): one GET per reconcile
    for _ in range(10):
        assert not missing_mounts(before, md, p)  # type: ignore[arg-type]
    assert before.asked == [secret] * 10
    now = [1000.0]
    kube, serving = CheckingKube(store, set()), ServingMounts(store, clock=lambda: now[0])
    for _ in range(10):  # ten reconciles over 45 s, the pod template unchanged: one GET
        assert not missing_mounts(kube, md, p, serving)  # type: ignore[arg-type]
        now[0] += 5
    assert kube.asked == [secret]
    rolled = with_annotation(p, "yes")  # a new pod template: asked at once, then trusted
    for _ in range(3):
        assert not missing_mounts(kube, md, rolled, serving)  # type: ignore[arg-type]
    assert kube.asked == [secret] * 2
    # the Secret is deleted under the running Deployment: noticed at the first reconcile a minute after the last
    # look (here 59.9 s after it: not yet), then asked at every reconcile until it is back
    looked = now[0]
    kube.absent = {("Secret", "push")}
    now[0] = looked + SERVING_MOUNTS_RECHECK_SECONDS - 0.1
    assert not missing_mounts(kube, md, rolled, serving) and len(kube.asked) == 2  # type: ignore[arg-type]
    now[0] = looked + SERVING_MOUNTS_RECHECK_SECONDS
    for _ in range(2):
        assert missing_mounts(kube, md, rolled, serving).objects == {secret}  # type: ignore[arg-type]
    assert len(kube.asked) == 4
    kube.absent = set()  # back: found, and trusted again
    for _ in range(3):
        assert not missing_mounts(kube, md, rolled, serving)  # type: ignore[arg-type]
    assert len(kube.asked) == 5
    # a ModelDeployment deleted and made again under the same name (another uid), or forgotten: asked again
    serving.forget("ml", "digits")
    assert not missing_mounts(kube, md, rolled, serving) and len(kube.asked) == 6  # type: ignore[arg-type]
    other = md.model_copy(update={"metadata": md.metadata.model_copy(update={"uid": "u-2"})})
    assert not missing_mounts(kube, other, rolled, serving) and len(kube.asked) == 7  # type: ignore[arg-type]


def test_the_serving_mounts_memory_is_bounded() -> None:
    md, p = pulled()
    store = Store()
    kube, serving = CheckingKube(store, set()), ServingMounts(store, capacity=2)
    mds = [md.model_copy(update={"metadata": md.metadata.model_copy(update={"namespace": n})}) for n in "abc"]
    for m in mds:
        missing_mounts(kube, m, p, serving)  # type: ignore[arg-type]
    assert len(kube.asked) == 3
    missing_mounts(kube, mds[2], p, serving)  # type: ignore[arg-type]
    missing_mounts(kube, mds[1], p, serving)  # type: ignore[arg-type]
    assert len(kube.asked) == 3
    missing_mounts(kube, mds[0], p, serving)  # type: ignore[arg-type]
    assert len(kube.asked) == 4  # the one looked at longest ago was forgotten
