"""Builds in the operator's build namespace, without a cluster: the build Job's manifest (placement, binding to its
ModelDeployment by namespace and uid labels, the hand-off steps, the platform's push credentials, BuildKit's
confinement), the export Job, what the store believes about whose a build Job is, the pods waiting for an upload,
and the garbage collection of build Jobs whose ModelDeployment is gone."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import kubernetes_validate
import pytest

from modelship.api import ModelDeployment
from modelship.config import OperatorConfig
from modelship.controller.observe import job_observation, receivers
from modelship.controller.reconcile import Reconciler
from modelship.controller.store import Store
from modelship.resources import build_job as bj
from modelship.resources.export_job import export_job
from modelship.resources.meta import MODELDEPLOYMENT_NAMESPACE_LABEL, OWNER_UID_LABEL, build_job_name
from tests.support.specs import valid_doc
from tests.unit.test_loud_failures import MemoryKube

UID = "6f1f2c7e-1111-4222-8333-944445555666"
DIGEST = "sha256:" + "ef" * 32
BUILDS = "modelship-system"
CONFIG = replace(OperatorConfig(), build_namespace=BUILDS, build_push_secrets={"registry.local:5000": "push-local"})


def md(namespace: str = "team-a", uid: str = UID, **build: Any) -> ModelDeployment:
    doc = copy.deepcopy(valid_doc("digits"))
    doc["metadata"].update(namespace=namespace, uid=uid, generation=1)
    doc["spec"]["build"].update(build)
    return ModelDeployment.from_body(doc)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def test_the_build_job_runs_in_the_build_namespace_bound_by_labels() -> None:
    m = md()
    job = bj.build_job(m, "r1", DIGEST, CONFIG)
    kubernetes_validate.validate(job, "1.34", strict=True)
    meta = job["metadata"]
    assert meta["namespace"] == BUILDS and "ownerReferences" not in meta
    assert meta["name"] == build_job_name(m, "r1", shared=True) and meta["name"].startswith("team-a-digits-build-")
    for labels in (meta["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels[MODELDEPLOYMENT_NAMESPACE_LABEL] == "team-a" and labels[OWNER_UID_LABEL] == UID
    assert meta["annotations"][bj.ARTIFACT_DIGEST_ANNOTATION] == DIGEST
    # the same ModelDeployment name in another namespace: another Job name in the shared build namespace
    assert build_job_name(md("team-b"), "r1", shared=True) != meta["name"]
    # without a build namespace (an operator outside the chart): the ModelDeployment's own, owned as before
    own = bj.build_job(m, "r1", DIGEST, OperatorConfig())
    assert own["metadata"]["namespace"] == "team-a" and own["metadata"]["ownerReferences"][0]["uid"] == UID


def test_the_build_pod_receives_the_recorded_artifact_and_nothing_else() -> None:
    spec = pod_spec(bj.build_job(md(), "r1", DIGEST, CONFIG))
    receive, context = spec["initContainers"]
    assert receive["name"] == "receive" and receive["args"][:2] == ["artifact", "receive"]
    args = receive["args"]
    assert args[args.index("--digest") + 1] == DIGEST
    assert args[args.index("--max-bytes") + 1] == str(2 * 2**30)  # the artifact claim's size (2Gi)
    assert receive["ports"] == [{"name": "upload", "containerPort": 8080, "protocol": "TCP"}]
    token = next(v for v in spec["volumes"] if v["name"] == "upload-token")
    assert token["downwardAPI"]["items"] == [
        {"path": "token", "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/controller-uid']"}}
    ]
    assert context["args"][context["args"].index("--expect-digest") + 1] == DIGEST
    assert all(v["name"] != "artifacts" for v in spec["volumes"]), "the tenant's claim is never mounted here"
    for step in (receive, context):
        sc = step["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    rules = bj.build_job(md(), "r1", DIGEST, CONFIG)["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"] == {"containerName": "receive", "operator": "In", "values": [1]}
    with pytest.raises(ValueError, match="not sha256"):
        bj.build_job(md(), "r1", "/artifacts/r1", CONFIG)


def test_push_credentials_are_the_platforms_per_registry() -> None:
    spec = pod_spec(bj.build_job(md(pushSecretRef={"name": "tenant-creds"}), "r1", DIGEST, CONFIG))
    secret = next(v for v in spec["volumes"] if v["name"] == "docker-config")
    assert secret["secret"]["secretName"] == "push-local"  # the build namespace's, never the tenant's
    other = replace(CONFIG, build_push_secrets={"registry.example.com": "push-example"})
    spec = pod_spec(bj.build_job(md(pushSecretRef={"name": "tenant-creds"}), "r1", DIGEST, other))
    assert all(v["name"] != "docker-config" for v in spec["volumes"])  # no Secret for that registry: anonymous
    # an operator without a build namespace builds in the tenant's: there its pushSecretRef is its own Secret
    spec = pod_spec(bj.build_job(md(pushSecretRef={"name": "tenant-creds"}), "r1", DIGEST, OperatorConfig()))
    assert next(v for v in spec["volumes"] if v["name"] == "docker-config")["secret"]["secretName"] == "tenant-creds"


def test_buildkit_is_confined_to_what_it_needs() -> None:
    spec = pod_spec(bj.build_job(md(), "r1", DIGEST, CONFIG))
    (build,) = spec["containers"]
    sc = build["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["privileged"] is False and sc["runAsUser"] == 1000
    assert set(sc["capabilities"]["drop"]) >= {"NET_RAW", "SYS_CHROOT"} and "add" not in sc["capabilities"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["buildkitd"]["emptyDir"] == {"sizeLimit": CONFIG.build_state_size}
    assert all("sizeLimit" in v["emptyDir"] for v in volumes.values() if "emptyDir" in v)
    assert {m["mountPath"] for m in build["volumeMounts"]} >= {bj.BUILDKIT_STATE, bj.BUILDKIT_HOME, "/run/user/1000"}


def test_the_export_job_is_restricted_and_holds_no_credentials() -> None:
    m = md()
    job = export_job(m, "r1", CONFIG, build_pod="team-a-digits-build-r1-x7k2p", address="10.0.0.7", token="uid-1",
                     port=8080, attempt=1)  # fmt: skip
    kubernetes_validate.validate(job, "1.34", strict=True)
    assert job["metadata"]["namespace"] == "team-a" and job["metadata"]["ownerReferences"][0]["uid"] == UID
    spec = pod_spec(job)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = spec["containers"]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["automountServiceAccountToken"] is False
    assert [v["name"] for v in spec["volumes"]] == ["artifacts", "tmp"]
    assert spec["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True
    assert all("secret" not in v for v in spec["volumes"]) and "envFrom" not in c
    ipv6 = export_job(m, "r1", CONFIG, build_pod="p-abcde", address="fd00::7", token="t", port=8080, attempt=1)
    assert "http://[fd00::7]:8080/artifact" in pod_spec(ipv6)["containers"][0]["args"]
    # found again by the build pod it uploads to, whatever its name
    assert job_observation(job, []).build_pod == "team-a-digits-build-r1-x7k2p"


def _job(namespace: str, labels: dict[str, str], name: str = "j") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"{name}-uid",
                         "labels": {"modelship.io/modeldeployment": "digits", **labels}}}  # fmt: skip


def test_only_the_build_namespace_may_say_whose_a_job_is() -> None:
    store = Store(build_namespace=BUILDS)
    store.put("Job", _job(BUILDS, {MODELDEPLOYMENT_NAMESPACE_LABEL: "team-a"}, "b"))
    # a tenant's Job claiming to belong to another namespace's ModelDeployment: believed to be its own namespace's
    store.put("Job", _job("team-b", {MODELDEPLOYMENT_NAMESPACE_LABEL: "team-a"}, "forged"))
    assert [j["metadata"]["name"] for j in store.owned("team-a", "digits", "Job")] == ["b"]
    assert [j["metadata"]["name"] for j in store.owned("team-b", "digits", "Job")] == ["forged"]
    assert store.owners("Job", BUILDS) == [("team-a", "digits")]


def _pod(phase: str = "Pending", ip: str | None = "10.0.0.7", receive: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status["podIP"] = ip
    if receive is not None:
        status["initContainerStatuses"] = [{"name": "receive", "state": receive}]
    return {"metadata": {"name": "p-abcde"}, "spec": {"initContainers": [{"name": "receive"}, {"name": "context"}]},
            "status": status}  # fmt: skip


def test_pods_waiting_for_their_artifact() -> None:
    assert receivers([_pod(receive={"running": {}})]) == (("p-abcde", "10.0.0.7"),)
    assert receivers([_pod(phase="Running")]) == (("p-abcde", "10.0.0.7"),)  # kwok reports no init statuses
    assert receivers([_pod(receive={"terminated": {"exitCode": 0}})]) == ()
    assert receivers([_pod(ip=None)]) == () and receivers([_pod(phase="Failed")]) == ()
    gone = _pod()
    gone["metadata"]["deletionTimestamp"] = "2026-11-28T10:00:00Z"
    assert receivers([gone]) == ()


def test_a_failed_init_step_is_where_the_pods_last_words_are() -> None:
    failed = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "receive exit 1"}
    words = "modelship artifact receive: error: not it"
    pod = _pod(phase="Failed", receive={"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "t1",
                                                       "message": words}})  # fmt: skip
    pod["metadata"]["ownerReferences"] = [{"kind": "Job", "name": "b", "uid": "u", "controller": True}]
    job = {"metadata": {"name": "b", "uid": "u", "labels": {"app.kubernetes.io/component": "build",
                                                          "modelship.io/revision": "r1"}},
           "spec": {"template": {"spec": pod["spec"]}}, "status": {"conditions": [failed]}}  # fmt: skip
    obs = job_observation(job, [pod])
    assert obs.termination_message == "modelship artifact receive: error: not it" and obs.uid == "u"


def test_build_jobs_of_a_gone_modeldeployment_are_deleted() -> None:
    store = Store(build_namespace=BUILDS)
    old = _job(BUILDS, {MODELDEPLOYMENT_NAMESPACE_LABEL: "team-a", OWNER_UID_LABEL: "old-uid"}, "old")
    new = _job(BUILDS, {MODELDEPLOYMENT_NAMESPACE_LABEL: "team-a", OWNER_UID_LABEL: UID}, "new")
    store.put("Job", old)
    store.put("Job", new)
    deleted: list[tuple[str, ...]] = []

    class Recording(MemoryKube):
        def delete(self, *args: Any) -> None:
            deleted.append(args)

    reconciler = Reconciler(Recording(store), store, CONFIG)  # type: ignore[arg-type]
    assert reconciler.orphaned_builds() == [("team-a", "digits")]  # no such ModelDeployment in the store
    assert reconciler.collect_builds("team-a", "digits", UID) == 1  # a new one of the same name keeps its own
    assert deleted == [("batch/v1", "Job", BUILDS, "old", "old-uid")]  # exactly that Job (uid precondition)
    assert reconciler.collect_builds("team-a", "digits", None) == 1  # gone: all of them
    assert deleted[-1] == ("batch/v1", "Job", BUILDS, "new", "new-uid")
    assert store.owned("team-a", "digits", "Job") == []
