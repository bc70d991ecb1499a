"""The chart's build defaults on the real control plane: the API server accepts a ModelDeployment without
spec.build.repository or engine (and stores no engine), and the operator builds it to the default registry with
the default engine, or, with no default registry, Stalls it naming the field and creates nothing."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from modelship.config import OperatorConfig
from tests.integration.cluster import condition
from tests.integration.operator_harness import running_operator
from tests.integration.test_operator import DIGEST, Cluster, md_doc

REGISTRY = "registry.local:5000/tenants"


def _left_out(name: str, build_msg: str) -> dict[str, Any]:
    doc = md_doc(name, build_msg=build_msg)
    del doc["spec"]["build"]["repository"]
    assert "engine" not in doc["spec"]["build"]
    return doc


def test_default_registry_and_engine(api_client: client.ApiClient, namespace: str) -> None:
    env = {"MODELSHIP_BUILD_REGISTRY": REGISTRY, "MODELSHIP_BUILD_ENGINE": "kaniko"}
    with running_operator(api_client, env):
        k = Cluster(api_client, namespace)
        # Kaniko leaves the bare digest: the operator completes it from the repository it asked for
        stored = k.apply(_left_out("digits", DIGEST))
        assert "engine" not in stored["spec"]["build"] and "repository" not in stored["spec"]["build"]
        ready = k.wait_condition("Ready", "True", timeout=120)
        repository = f"{REGISTRY}/{namespace}/digits"
        assert ready["status"]["image"]["reference"] == f"{repository}@{DIGEST}"
        (job,) = k.jobs("build")
        assert job.metadata.annotations["modelship.io/image"] == f"{repository}:{ready['status']['revision']}"
        assert job.spec.template.spec.containers[0].image == OperatorConfig().images.kaniko
        dep = k.apps.read_namespaced_deployment("digits", namespace)
        assert dep.spec.template.spec.containers[0].image == f"{repository}@{DIGEST}"
        # the spec is Git's: still no repository or engine in it
        assert "repository" not in k.md()["spec"]["build"] and "engine" not in k.md()["spec"]["build"]


def test_no_default_registry_stalls_naming_the_field(api_client: client.ApiClient, namespace: str) -> None:
    with running_operator(api_client):
        k = Cluster(api_client, namespace)
        k.apply(_left_out("digits", DIGEST))
        stalled = k.wait_condition("Stalled", "True", reason="InvalidSpec")
        message = condition(stalled, "Stalled")["message"]
        assert message.startswith("spec.build.repository: required"), message
        assert stalled["status"]["lastFailure"]["reason"] == "InvalidSpec"
        assert k.jobs() == []
