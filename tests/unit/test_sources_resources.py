"""Model sources in the API and in the manifests: format inference, per-source credential files, and revisions
served without a build from a pulled OCI artifact."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelship.api import ModelDeployment
from modelship.api.source import ModelFormat, format_from_uri
from modelship.config import OperatorConfig
from modelship.resources.artifact import single_node_warning
from modelship.resources.optimize_job import optimize_job
from modelship.resources.plan import serving_plan
from modelship.resources.serving import ServedArtifact, deployment
from tests.support.specs import valid_doc

CONFIG = OperatorConfig()
REF = "oci://registry.local:5000/models/digits@sha256:" + "a" * 64


def md(mutate: Any = None) -> ModelDeployment:
    doc = valid_doc()
    if mutate:
        mutate(doc["spec"])
    doc["metadata"]["namespace"] = "team-a"
    return ModelDeployment.from_body(doc)


@pytest.mark.parametrize(
    ("uri", "fmt"),
    [
        ("s3://b/m/model.h5", ModelFormat.H5),
        ("pvc://c/model.HDF5", ModelFormat.H5),
        ("https://h/x/model.keras", ModelFormat.KERAS),
        ("oci://r/m/model.tflite", ModelFormat.TFLITE),
        ("s3://b/saved_model/", None),
        ("oci://r/m:v1", None),
        ("models:/m/1", None),
    ],
)
def test_format_from_uri(uri: str, fmt: ModelFormat | None) -> None:
    assert format_from_uri(uri) == fmt


def test_format_may_be_omitted_and_the_job_then_passes_none() -> None:
    def omit(spec: dict[str, Any]) -> None:
        spec["model"] = {"uri": "s3://bucket/digits/saved_model"}

    m = md(omit)
    assert m.spec.model.format is None and m.spec.model.inferred_format() is None
    args = optimize_job(m, "r1", CONFIG)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--format" not in args
    explicit = md(lambda s: s["model"].update(uri="s3://bucket/m.keras", format="h5"))
    assert explicit.spec.model.inferred_format() == ModelFormat.H5  # explicit wins over the name


def test_each_source_has_its_own_credentials_directory() -> None:
    def creds(spec: dict[str, Any]) -> None:
        spec["model"]["credentials"] = {"secretRef": {"name": "models"}, "endpoint": "https://s3.example.com"}
        spec["optimization"]["data"]["evaluation"]["credentials"] = {
            "secretRef": {"name": "datasets"},
            "endpoint": "https://minio.example.com",
            "caBundleRef": {"name": "corp-ca", "key": "ca.pem"},
        }

    pod = optimize_job(md(creds), "r1", CONFIG)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sources = json.loads(c["args"][c["args"].index("--sources-json") + 1])
    assert sources["model"]["endpoint"] == "https://s3.example.com"
    assert sources["evaluation"]["endpoint"] == "https://minio.example.com"
    assert sources["evaluation"]["caFile"].startswith("/var/run/modelship/sources/evaluation/")
    assert sources["calibration"] == {}  # no credentials: none (nothing from the environment)
    dirs = {sources[r]["credentialsDir"] for r in ("model", "evaluation")}
    assert len(dirs) == 2  # Secrets with the same key names cannot overwrite each other
    mounted = {m["mountPath"] for m in c["volumeMounts"]}
    assert dirs <= mounted
    secrets = [v["secret"] for v in pod["volumes"] if "secret" in v]
    assert sorted(s["secretName"] for s in secrets) == ["datasets", "models"]
    assert all(s["defaultMode"] == 0o400 for s in secrets)
    assert "envFrom" not in c


def _no_build(spec: dict[str, Any]) -> None:
    spec["build"] = {"enabled": False, "repository": "registry.local:5000/models/digits", "insecureRegistry": True}


def test_build_less_revision_pushes_and_serves_a_pulled_copy() -> None:
    m = md(_no_build)
    args = optimize_job(m, "r1", CONFIG)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--push-to") + 1] == "oci://registry.local:5000/models/digits:r1"
    assert "--push-plain-http" in args
    dep = deployment(m, "r1", CONFIG, None, 2, ServedArtifact(REF, "sha256:" + "b" * 64))
    pod = dep["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])  # no RWO claim: any node works
    (init,) = pod["initContainers"]
    assert init["args"] == ["pull", REF, "--out", "/models", "--digest", "sha256:" + "b" * 64, "--plain-http"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    (server,) = pod["containers"]
    assert server["args"][server["args"].index("--model") + 1] == "/models/model.tflite"
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]


def test_savedmodel_export_is_served_from_its_real_path() -> None:
    def saved(spec: dict[str, Any]) -> None:
        _no_build(spec)
        spec["optimization"] = {
            "steps": [{"type": "prune", "prune": {"targetSparsity": 0.5}}],
            "data": {"evaluation": {"uri": "pvc://models/digits/test.npz", "format": "npz"}},
            "export": {"format": "savedmodel"},
        }

    m = md(saved)
    for artifact in (ServedArtifact(REF), None):  # pulled copy, or the claim when nothing was pushed
        (server,) = serving_plan(m, "r1", CONFIG, None, artifact).deployment["spec"]["template"]["spec"]["containers"]
        assert server["args"][server["args"].index("--model") + 1] == "/models/saved_model"


def test_operator_wide_artifact_repository() -> None:
    config = OperatorConfig.from_env(
        {"MODELSHIP_ARTIFACT_REPOSITORY": "registry.example.com/artifacts", "MODELSHIP_ARTIFACT_INSECURE_REGISTRY": "1"}
    )
    m = md(lambda s: s.update(build={"enabled": False}))
    args = optimize_job(m, "r9", config)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--push-to") + 1] == "oci://registry.example.com/artifacts/team-a/digits:r9"
    assert "--push-plain-http" in args
    # without any repository nothing is pushed and the pods mount the claim (one node)
    assert "--push-to" not in optimize_job(m, "r9", CONFIG)["spec"]["template"]["spec"]["containers"][0]["args"]
    built = md()
    assert "--push-to" not in optimize_job(built, "r9", config)["spec"]["template"]["spec"]["containers"][0]["args"]


TENANTS = "registry.local:5000/tenants"


def test_build_registry_is_the_default_home_of_build_less_artifacts() -> None:
    """No repository in the spec and none for artifacts in the operator: the build registry's
    <namespace>/<name> receives the artifact (each pod pulls it), unless builds push there with a platform Secret
    the tenant's optimization Job cannot use; the spec's own repository and the chart's artifacts.repository win."""
    from modelship.resources.defaults import artifact_registry, with_operator_defaults
    from modelship.resources.revision import revision

    off = md(lambda s: s.update(build={"enabled": False, "insecureRegistry": True}))
    config = OperatorConfig(build_registry=TENANTS)
    effective = with_operator_defaults(off, config)
    assert effective.spec.build.repository == f"{TENANTS}/team-a/digits" and not effective.spec.build.enabled
    args = optimize_job(effective, "r1", config)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--push-to") + 1] == f"oci://{TENANTS}/team-a/digits:r1" and "--push-plain-http" in args
    assert revision(effective.spec) != revision(off.spec)  # relying on a default: its revision follows it
    # the build registry pushed to with the platform's Secret: no default, the claim (and the MultiNode warning)
    secret = OperatorConfig(build_registry=TENANTS, build_push_secrets={"registry.local:5000": "push"})
    assert artifact_registry(secret) is None and with_operator_defaults(off, secret).spec.build.repository is None
    assert "build.pushSecrets" in (single_node_warning(off, secret) or "")
    # the chart's artifacts.repository wins (pushed under <repository>/<namespace>/<name>); so does the spec's own
    both = OperatorConfig(build_registry=TENANTS, artifact_repository="registry.local:5000/art")
    assert with_operator_defaults(off, both).spec.build.repository is None
    args = optimize_job(off, "r1", both)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--push-to") + 1] == "oci://registry.local:5000/art/team-a/digits:r1"
    own = md(lambda s: s.update(build={"enabled": False, "repository": "r.example/own/m"}))
    assert with_operator_defaults(own, config).spec.build.repository == "r.example/own/m"
    # without any registry nothing changes: the claim
    assert with_operator_defaults(off, CONFIG).spec.build.repository is None
    # a default that would be no valid repository: the claim, not a refusal (the warning says why)
    long = OperatorConfig(build_registry="registry.example.com/" + "a" * 240)
    assert with_operator_defaults(off, long).spec.build.repository is None
    assert "is not a valid repository" in (single_node_warning(off, long) or "")


def test_single_node_warning_names_what_asks_for_several_pods() -> None:
    def spec(**serving: Any) -> ModelDeployment:
        return md(lambda s: s.update(build={"enabled": False}, serving=serving))

    assert single_node_warning(spec(replicas=1), CONFIG) is None
    assert single_node_warning(spec(replicas=3), CONFIG) is not None
    suspended = md(lambda s: s.update(build={"enabled": False}, suspend=True, serving={"replicas": 3}))
    assert single_node_warning(suspended, CONFIG) is None
    hpa = {"enabled": True, "maxReplicas": 1, "targetCPUUtilizationPercentage": 70}
    assert single_node_warning(spec(replicas=3, autoscaling=hpa), CONFIG) is None  # the HPA owns the count: 1
    canary = single_node_warning(spec(replicas=1, rollout={"strategy": "Canary"}), CONFIG) or ""
    assert "Canary rollout" in canary and "neither the spec (spec.build.repository) nor the operator" in canary


def test_the_multinode_warning_is_an_event_once_and_a_condition_while_it_holds() -> None:
    from modelship.controller.observe import JobState, Observed
    from modelship.controller.plan import plan
    from modelship.resources.revision import revision
    from tests.support.endpoints import routed
    from tests.unit.test_plan import NOW, cond, deployment, job, make_md, summary

    m = make_md(build=False)
    rev = revision(m.spec)
    obs = Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary())],
                   deployment=deployment(rev, CONFIG.images.serving), endpoints=routed((rev, 2)))  # fmt: skip
    first = plan(m, obs, CONFIG, NOW)
    multi = cond(first.status, "MultiNode")
    assert (multi["status"], multi["reason"]) == ("False", "ArtifactClaimReadWriteOnce")
    assert cond(first.status, "Ready")["status"] == "True"  # a warning, not a failure: one node serves
    (event,) = [e for e in first.events if e.reason == "MultiNodeArtifactClaimReadWriteOnce"]
    assert event.type == "Warning" and event.message == multi["message"]
    again = plan(make_md(build=False, status=first.status), obs, CONFIG, NOW)
    assert cond(again.status, "MultiNode") == multi
    assert not any(e.reason.startswith("MultiNode") for e in again.events)  # said once, not every resync
    one = make_md(build=False, status=first.status, serving={"replicas": 1})
    assert all(c["type"] != "MultiNode" for c in plan(one, obs, CONFIG, NOW).status["conditions"])
