"""The in-cluster build Job against the real kube-apiserver: accepted as built (strict field validation),
run through the kwok Stages with the result in the build container's termination message, and admitted
only at the Pod Security level its securityContext documents."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelship.api import ModelDeployment
from modelship.api.build_result import BuildResult
from modelship.config import OperatorConfig
from modelship.resources.build_job import build_job
from modelship.resources.meta import build_job_name
from modelship_dev import cluster as devcluster
from tests.integration.cluster import job_pods, wait_for, wait_job_finished
from tests.support.specs import valid_doc

pytestmark = pytest.mark.integration

CONFIG = OperatorConfig()
REV = "r0123456789"
REPO = "registry.local:5000/models/digits"
DIGEST = "sha256:" + "ab" * 32
ARTIFACT = "sha256:" + "ef" * 32


def create_md(
    api_client: client.ApiClient, namespace: str, build: dict[str, Any], name: str = "digits"
) -> ModelDeployment:
    """A real ModelDeployment (the owner reference must point at a live object, or GC deletes the Job)."""
    doc = copy.deepcopy(valid_doc(name))
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["build"] = build
    body = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "modelship.io", "v1alpha1", namespace, "modeldeployments", doc
    )
    return ModelDeployment.from_body(body)


@pytest.fixture
def batch(api_client: client.ApiClient) -> Any:
    return client.BatchV1Api(api_client)


BUILDS = {
    "buildkit": {"repository": REPO},
    "buildkit-multiarch-secret-insecure": {
        "repository": REPO,
        "platforms": ["linux/amd64", "linux/arm64"],
        "pushSecretRef": {"name": "regcred"},
        "insecureRegistry": True,
        "job": {"podAnnotations": {"example.com/team": "ml"}, "nodeSelector": {"kubernetes.io/os": "linux"}},
    },
    "kaniko": {"repository": REPO, "engine": "kaniko", "pushSecretRef": {"name": "regcred"}},
}


@pytest.mark.parametrize("case", sorted(BUILDS))
def test_accepted_with_strict_field_validation(
    api_client: client.ApiClient, namespace: str, batch: Any, case: str
) -> None:
    md = create_md(api_client, namespace, BUILDS[case])
    job = build_job(md, REV, ARTIFACT, CONFIG)
    created = batch.create_namespaced_job(namespace, job, dry_run="All", field_validation="Strict")
    assert created.metadata.name == build_job_name(md, REV)
    # nothing we set was dropped: the API server round-trips the security settings that matter
    served = api_client.sanitize_for_serialization(created)
    pod = served["spec"]["template"]["spec"]
    sent = job["spec"]["template"]["spec"]
    (got,) = [c for c in pod["containers"] if c["name"] == "build"]
    (want,) = [c for c in sent["containers"] if c["name"] == "build"]
    assert got["securityContext"] == want["securityContext"]
    assert got["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["initContainers"][0]["args"] == sent["initContainers"][0]["args"]
    assert served["spec"]["podFailurePolicy"] == job["spec"]["podFailurePolicy"]


def test_runs_and_reports_the_pushed_digest(api_client: client.ApiClient, namespace: str, batch: Any) -> None:
    result = BuildResult(ok=True, image=f"{REPO}@{DIGEST}", digest=DIGEST, platforms=["linux/amd64"])
    # kwok's Stage ends the containers with the message from this pod annotation (set via podAnnotations)
    md = create_md(
        api_client,
        namespace,
        {"repository": REPO, "job": {"podAnnotations": {devcluster.ANNOTATION_TERMINATION_MESSAGE: result.to_line()}}},
    )
    # no claim: the artifact comes over the network (the receive step), so the pod schedules anywhere
    job = build_job(md, REV, ARTIFACT, CONFIG)
    batch.create_namespaced_job(namespace, job)
    _check_finished(api_client, namespace, job["metadata"]["name"], md, result)


def _check_finished(
    api_client: client.ApiClient, namespace: str, name: str, md: ModelDeployment, result: BuildResult
) -> None:
    finished = wait_job_finished(api_client, namespace, name, timeout=90)
    assert any(c.type == "Complete" and c.status == "True" for c in finished.status.conditions)
    assert finished.metadata.owner_references[0].uid == md.metadata.uid
    (pod,) = job_pods(api_client, namespace, name)
    (status,) = [s for s in pod.status.container_statuses if s.name == "build"]
    message = status.state.terminated.message
    assert BuildResult.from_termination_message(message, REPO, ["linux/amd64"]) == result
    # and the operator's own reader takes it
    from modelship.controller.stages.build import parse_build_result

    assert parse_build_result(message, REPO, ["linux/amd64"]).image == result.image


@pytest.fixture
def pss_namespace(api_client: client.ApiClient, namespace: str) -> Iterator[tuple[str, Any]]:
    core = client.CoreV1Api(api_client)

    def set_level(level: str) -> None:
        core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": level}}})

    yield namespace, set_level


def _pod_from(job: dict[str, Any]) -> dict[str, Any]:
    tmpl = job["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", **tmpl["metadata"]}, "spec": tmpl["spec"]}


def _admitted(core: Any, namespace: str, pod: dict[str, Any]) -> str | None:
    """None when admitted (dry run), else the API server's reason."""
    try:
        core.create_namespaced_pod(namespace, pod, dry_run="All")
    except ApiException as exc:
        assert exc.status == 403, exc.body
        return str(exc.body)
    return None


def _verdict(core: Any, namespace: str, pod: dict[str, Any], *, admitted: bool) -> str | None:
    """The dry-run verdict once it is the expected one: PodSecurity admission reads the namespace's level label
    through an informer, so a level just patched takes a moment to apply. Fails after the deadline."""
    last: list[str | None] = [None]

    def expected() -> bool:
        last[0] = _admitted(core, namespace, pod)
        return (last[0] is None) == admitted

    wait_for(
        expected, timeout=30, description=f"pod {'admitted' if admitted else 'refused'} at the namespace's new level"
    )
    return last[0]


def test_pod_security_levels_match_the_documented_trade_off(
    api_client: client.ApiClient, pss_namespace: tuple[str, Any]
) -> None:
    namespace, set_level = pss_namespace
    core = client.CoreV1Api(api_client)
    buildkit = _pod_from(build_job(create_md(api_client, namespace, {"repository": REPO}, "bk"), REV, ARTIFACT, CONFIG))
    kaniko = _pod_from(
        build_job(
            create_md(api_client, namespace, {"repository": REPO, "engine": "kaniko"}, "kn"),
            REV,
            ARTIFACT,
            CONFIG,
        )
    )
    set_level("privileged")
    assert _verdict(core, namespace, buildkit, admitted=True) is None
    set_level("baseline")
    reason = _verdict(core, namespace, buildkit, admitted=False)
    assert reason is not None, "rootless BuildKit needs Unconfined seccomp/AppArmor: outside baseline"
    violations = reason.split('violates PodSecurity \\"baseline:latest\\": ', 1)[1].split('","reason"')[0]
    # exactly the two documented relaxations, nothing else (no privileged, capabilities, host namespaces)
    assert "AppArmor profile" in violations and "seccompProfile" in violations, violations
    for other in ("privileged", "capabilities", "host", "procMount", "sysctl"):
        assert other not in violations, violations
    assert _admitted(core, namespace, kaniko) is None, "kaniko stays within baseline"
    set_level("restricted")
    reason = _verdict(core, namespace, kaniko, admitted=False)
    assert reason is not None and "runAsNonRoot" in reason, reason
