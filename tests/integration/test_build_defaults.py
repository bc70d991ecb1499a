"""The chart's build defaults on the real control plane: the API server accepts a ModelDeployment without
spec.build.repository or engine (and stores no engine), and the operator builds it to the default registry with
the default engine, or, with no default registry, Stalls it naming the field and creates nothing. A build-less
ModelDeployment's artifact goes to the default registry too; with no registry at all its pods mount the
ReadWriteOnce claim, and one that asks for more than one pod is told so (MultiNode False, a Warning Event)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from modelship.config import OperatorConfig
from tests.integration.cluster import condition, wait_for
from tests.integration.operator_harness import running_operator
from tests.integration.test_operator import DIGEST, Cluster, md_doc, opt_summary

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


def _build_less(name: str, namespace: str, *, pushed_to: str | None, replicas: int) -> dict[str, Any]:
    """A ModelDeployment without a build (no repository); its optimizer reports the push the operator asked for."""
    ref = f"oci://{pushed_to}/{namespace}/{name}@{DIGEST}" if pushed_to else None
    doc = md_doc(name, opt_msg=opt_summary(artifact_ref=ref) if ref else None, replicas=replicas)
    doc["spec"]["build"] = {"enabled": False, "insecureRegistry": True}
    return doc


def test_build_less_revisions_push_to_the_default_registry_and_pull_everywhere(
    api_client: client.ApiClient, namespace: str
) -> None:
    """The chart's default (no artifacts.repository) with a build registry: the optimization Job pushes the
    artifact to <build.registry>/<namespace>/<name>:<revision> and every serving pod pulls its own copy (no
    ReadWriteOnce claim in the Deployment, so replicas on any node), and nothing warns."""
    with running_operator(api_client, {"MODELSHIP_BUILD_REGISTRY": REGISTRY}):
        k = Cluster(api_client, namespace)
        stored = k.apply(_build_less("digits", namespace, pushed_to=REGISTRY, replicas=3))
        assert "repository" not in stored["spec"]["build"]
        ready = k.wait_condition("Ready", "True", timeout=120)
        rev, ref = ready["status"]["revision"], f"oci://{REGISTRY}/{namespace}/digits@{DIGEST}"
        (job,) = k.jobs("optimizer")
        args = job.spec.template.spec.containers[0].args
        assert args[args.index("--push-to") + 1] == f"oci://{REGISTRY}/{namespace}/digits:{rev}"
        assert "--push-plain-http" in args
        assert ready["status"]["servingArtifact"] == ref
        pod = k.apps.read_namespaced_deployment("digits", namespace).spec.template.spec
        (init,) = pod.init_containers
        assert init.args[:2] == ["pull", ref] and "--plain-http" in init.args
        assert not any(v.persistent_volume_claim for v in pod.volumes)
        assert all(c["type"] != "MultiNode" for c in ready["status"]["conditions"])


def test_pods_confined_to_the_claim_get_a_condition_and_a_warning_event(
    api_client: client.ApiClient, namespace: str
) -> None:
    """No registry at all: the pods mount the ReadWriteOnce artifact claim. With 2 replicas the ModelDeployment is
    Ready (one node serves) and says MultiNode False with what to set, with one Warning Event; back to one replica
    the condition goes away."""
    with running_operator(api_client):
        k = Cluster(api_client, namespace)
        k.apply(_build_less("digits", namespace, pushed_to=None, replicas=2))
        ready = k.wait_condition("Ready", "True", timeout=120)
        multi = condition(ready, "MultiNode")
        assert (multi["status"], multi["reason"]) == ("False", "ArtifactClaimReadWriteOnce"), multi
        assert "digits-artifacts" in multi["message"] and "Multi-Attach" in multi["message"]
        assert "spec.build.repository" in multi["message"] and "artifacts.repository" in multi["message"]
        pod = k.apps.read_namespaced_deployment("digits", namespace).spec.template.spec
        assert any(v.persistent_volume_claim for v in pod.volumes) and not pod.init_containers

        def warnings() -> list[Any]:
            events = k.core.list_namespaced_event(namespace, field_selector="involvedObject.kind=ModelDeployment")
            return [e for e in events.items if e.reason == "MultiNodeArtifactClaimReadWriteOnce"]

        (event,) = wait_for(warnings, timeout=30, description="the MultiNode Warning Event")
        assert event.type == "Warning" and event.message == multi["message"]
        patched = _build_less("digits", namespace, pushed_to=None, replicas=1)
        k.apply(patched)
        # the scale-down is Reconciling (Ready False) until the Deployment reports one replica: a status written
        # for the new generation may say MultiNode gone before the Deployment has caught up, so wait for both
        one = k.wait_md(lambda o: all(c["type"] != "MultiNode" for c in o["status"]["conditions"])
                        and o["status"].get("observedGeneration") == o["metadata"]["generation"]
                        and condition(o, "Ready")["status"] == "True",
                        timeout=60, what="MultiNode gone and Ready at the new generation")  # fmt: skip
        assert one["status"]["replicas"] == 1 and one["status"]["availableReplicas"] == 1
        assert len(warnings()) == 1  # said once
