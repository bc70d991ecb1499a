"""The pure desired-state builders, field by field, and every manifest through kubernetes-validate."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import kubernetes_validate
import pytest

from modelship.api import ModelDeployment
from modelship.api.modeldeployment import MAX_NAME_LENGTH
from modelship.config import Images, OperatorConfig
from modelship.resources import meta
from modelship.resources.build_job import build_job
from modelship.resources.canary import canary_deployment
from modelship.resources.optimize_job import optimize_job
from modelship.resources.plan import serving_plan
from modelship.resources.revision import optimization_key, revision
from modelship.resources.serving import deployment, service_url
from modelship.resources.volumes import artifact_claim
from tests.support.specs import valid_doc

K8S_VERSION = "1.34.0"
UID = "6f1f2c7e-1111-4222-8333-944445555666"
CONFIG = OperatorConfig()


def md_from(doc: dict[str, Any], namespace: str = "ml") -> ModelDeployment:
    doc = copy.deepcopy(doc)
    doc["metadata"].update(namespace=namespace, uid=UID, generation=3)
    return ModelDeployment.from_body(doc)


def with_spec(**serving: Any) -> ModelDeployment:
    doc = valid_doc()
    doc["spec"]["serving"].update(serving)
    return md_from(doc)


def assert_restricted(pod_spec: dict[str, Any]) -> None:
    psc = pod_spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod_spec["containers"] + pod_spec.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["readOnlyRootFilesystem"] is True
        assert "privileged" not in sc or sc["privileged"] is False
    assert all("hostPath" not in v for v in pod_spec.get("volumes", []))
    assert pod_spec["automountServiceAccountToken"] is False


def assert_owned(obj: dict[str, Any], md: ModelDeployment) -> None:
    (ref,) = obj["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": md.metadata.name,
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    labels = obj["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "modelship"
    assert labels["app.kubernetes.io/instance"] == md.metadata.name
    assert obj["metadata"]["namespace"] == "ml"


def test_revision_is_stable_and_content_addressed() -> None:
    a, b = md_from(valid_doc()), md_from(valid_doc())
    assert revision(a.spec) == revision(b.spec)
    assert revision(a.spec).startswith("r") and len(revision(a.spec)) == 11
    # serving-only changes keep the revision: no new optimization, no new build
    scaled = with_spec(replicas=7, resources={"requests": {"cpu": "2"}})
    assert revision(scaled.spec) == revision(a.spec)
    job_only = valid_doc()
    job_only["spec"]["optimization"]["job"] = {"activeDeadlineSeconds": 60}
    assert revision(md_from(job_only).spec) == revision(a.spec)
    # anything that changes the artifact or the image changes it
    for path, value in [
        (("optimization", "gate", "maxDrop"), 0.02),
        (("model", "digest"), "sha256:" + "a" * 64),
        (("build", "platforms"), ["linux/amd64", "linux/arm64"]),
    ]:
        doc = valid_doc()
        node = doc["spec"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert revision(md_from(doc).spec) != revision(a.spec), path
    gpu = with_spec(hardware={"target": "gpu"})
    assert revision(gpu.spec) != revision(a.spec)
    assert optimization_key(gpu.spec) == optimization_key(a.spec)


def test_names_are_deterministic_and_bounded() -> None:
    md = md_from(valid_doc("a" * 45))
    rev = revision(md.spec)
    name = meta.optimize_job_name(md, rev)
    assert name == meta.optimize_job_name(md, rev)
    assert len(name) <= 63
    assert meta.optimize_job_name(md, rev, attempt=2) != name
    long = meta.safe_name("x" * 80, "opt", rev)
    assert len(long) == 63 and long == meta.safe_name("x" * 80, "opt", rev)


OTHER_UID = "0a9b8c7d-aaaa-4bbb-8ccc-ddddeeeeffff"
"""The uid of a namesake: the same ModelDeployment deleted and applied again."""


def with_uid(md: ModelDeployment, uid: str | None) -> ModelDeployment:
    return md.model_copy(update={"metadata": md.metadata.model_copy(update={"uid": uid})})


STAGE_NAMES = {
    "optimize": lambda md, rev, attempt: meta.optimize_job_name(md, rev, attempt),
    "build": lambda md, rev, attempt: meta.build_job_name(md, rev, attempt),
    "build-shared": lambda md, rev, attempt: meta.build_job_name(md, rev, attempt, shared=True),
    "export": lambda md, rev, attempt: meta.export_job_name(md, rev, f"p-build-x7k2{attempt}"),
}


@pytest.mark.parametrize("stage", sorted(STAGE_NAMES))
def test_stage_job_names_carry_the_uid(stage: str) -> None:
    """Two incarnations of a ModelDeployment (deleted, applied again under its name) never share a Job name; one
    incarnation's names are the same every time (found again after a restart), one per attempt."""
    name_of = STAGE_NAMES[stage]
    md = md_from(valid_doc())
    rev = revision(md.spec)
    first = name_of(md, rev, 1)
    assert first == name_of(md_from(valid_doc()), rev, 1)
    assert name_of(with_uid(md, OTHER_UID), rev, 1) != first
    assert name_of(md, rev, 2) not in (first, name_of(with_uid(md, OTHER_UID), rev, 2))
    assert "-6f1f2c7e" in first and "-0a9b8c7d" in name_of(with_uid(md, OTHER_UID), rev, 1)
    assert first.startswith("ml-digits-" if stage == "build-shared" else "digits-") and rev in first


def test_stage_job_names_read_md_revision_uid_attempt() -> None:
    md = md_from(valid_doc())
    rev = revision(md.spec)
    assert meta.optimize_job_name(md, rev) == f"digits-opt-{rev}-6f1f2c7e"
    assert meta.optimize_job_name(md, rev, attempt=3) == f"digits-opt-{rev}-6f1f2c7e-3"
    assert meta.build_job_name(md, rev, 2, shared=True) == f"ml-digits-build-{rev}-6f1f2c7e-2"
    assert meta.export_job_name(md, rev, "ml-digits-build-x-abcde") == f"digits-export-{rev}-6f1f2c7e-abcde"


def test_stage_job_names_without_a_uid_are_as_before() -> None:
    """``modelship render`` (no cluster, no uid): the names carry no token."""
    md = with_uid(md_from(valid_doc()), None)
    rev = revision(md.spec)
    assert meta.uid_token(md) == ""
    assert meta.optimize_job_name(md, rev) == f"digits-opt-{rev}"
    assert meta.optimize_job_name(md, rev, attempt=2) == f"digits-opt-{rev}-2"
    assert meta.build_job_name(md, rev, shared=True) == f"ml-digits-build-{rev}"
    assert meta.export_job_name(md, rev, "p-build-abcde") == f"digits-export-{rev}-abcde"


def test_a_uid_that_is_not_a_uuid_gets_a_digest_token() -> None:
    tokens = {meta.uid_token(with_uid(md_from(valid_doc()), uid)) for uid in ("u-1", "u-2", "U_1", "x" * 40)}
    assert len(tokens) == 4
    assert all(len(t) == meta.UID_TOKEN and t.isalnum() and t == t.lower() for t in tokens)


@pytest.mark.parametrize("shared", [False, True])
def test_long_names_stay_dns_labels_and_unique_per_uid(shared: bool) -> None:
    """The longest ModelDeployment name (in a 63-character namespace): every stage name is cut to a DNS label,
    still one per uid and attempt, and still begins with the ModelDeployment's name."""
    doc = valid_doc("m" * MAX_NAME_LENGTH)
    md = md_from(doc, namespace="n" * 63)
    other = with_uid(md, OTHER_UID)
    rev = revision(md.spec)
    builds = {meta.build_job_name(m, rev, attempt, shared=shared) for m in (md, other) for attempt in (1, 2)}
    others = {
        *(meta.optimize_job_name(m, rev, attempt) for m in (md, other) for attempt in (1, 2)),
        *(meta.export_job_name(m, rev, "p-build-abcde") for m in (md, other)),
    }
    assert len(builds | others) == 10
    for name in builds | others:
        assert len(name) <= meta.MAX_NAME and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert all(name.startswith("n" * 40 if shared else "m" * MAX_NAME_LENGTH) for name in builds)
    assert all(name.startswith("m" * MAX_NAME_LENGTH) for name in others)


def test_optimize_job() -> None:
    md = md_from(valid_doc())
    rev = revision(md.spec)
    job = optimize_job(md, rev, CONFIG)
    assert job["metadata"]["name"] == f"digits-opt-{rev}-6f1f2c7e"
    assert_owned(job, md)
    assert job["metadata"]["labels"]["modelship.io/revision"] == rev
    spec = job["spec"]
    assert spec["backoffLimit"] == 2 and spec["activeDeadlineSeconds"] == 3600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert_restricted(pod)
    (c,) = pod["containers"]
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["args"][:3] == ["optimize", "--model", "pvc://models/digits/cnn.h5"]
    assert f"/artifacts/{rev}" in c["args"]
    assert "--fail-on-block" not in c["args"]  # a blocked run is a decision the operator reads, not a pod failure
    assert {"name": "TF_USE_LEGACY_KERAS", "value": "1"} in c["env"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/mnt/pvc/models"]["readOnly"] is True
    assert "/artifacts" in mounts and "/tmp" in mounts
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"models", "digits-artifacts"}


def test_optimize_job_credentials_by_reference_only() -> None:
    doc = valid_doc()
    doc["spec"]["model"] = {
        "uri": "s3://bucket/m.h5",
        "format": "h5",
        "credentials": {
            "secretRef": {"name": "s3"},
            "serviceAccountName": "reader",
            "endpoint": "https://minio:9000",
            "caBundleRef": {"name": "ca", "key": "ca.crt"},
        },
    }
    job = optimize_job(md_from(doc), "r1", CONFIG)
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # credentials are files in the optimizer container, never environment variables
    assert "envFrom" not in c
    assert not any("secretKeyRef" in str(e) for e in c["env"])
    assert pod["serviceAccountName"] == "reader"
    sources = json.loads(c["args"][c["args"].index("--sources-json") + 1])
    assert sources["model"] == {
        "endpoint": "https://minio:9000",
        "credentialsDir": "/var/run/modelship/sources/model/credentials",
        "caFile": "/var/run/modelship/sources/model/ca/ca.crt",
    }
    secret = next(v for v in pod["volumes"] if "secret" in v)
    assert secret["secret"] == {"secretName": "s3", "defaultMode": 0o400}
    ca = next(v for v in pod["volumes"] if "configMap" in v)
    assert ca["configMap"] == {"name": "ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}


def test_deployment_cpu_defaults() -> None:
    md = md_from(valid_doc())
    rev = revision(md.spec)
    dep = deployment(md, rev, CONFIG, "registry.local:5000/models/digits@sha256:" + "b" * 64, 2)
    assert dep["metadata"]["name"] == "digits"
    assert_owned(dep, md)
    spec = dep["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    assert_restricted(pod)
    assert spec["template"]["metadata"]["labels"]["modelship.io/revision"] == rev
    assert set(spec["selector"]["matchLabels"].items()) <= set(spec["template"]["metadata"]["labels"].items())
    assert "modelship.io/revision" not in spec["selector"]["matchLabels"]  # selector must survive revisions
    (c,) = pod["containers"]
    assert c["image"].endswith("@sha256:" + "b" * 64)
    # probes use the metrics port, which the inference Service does not expose (nor its overload reach)
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "metrics"}
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    annotations = spec["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("9090", "/metrics")
    args = c["args"]
    assert args[args.index("--metrics-port") + 1] == "9090"
    assert args[args.index("--max-queue") + 1] == "512" and args[args.index("--max-connections") + 1] == "1024"
    assert args[args.index("--request-timeout-s") + 1] == "60"
    assert "--max-request-bytes" not in args  # sized by the server from its memory limit
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert "tolerations" not in pod
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})


def test_request_limits_reach_the_server() -> None:
    limits = {"maxRequestBytes": "16Mi", "maxQueuedRequests": 32, "maxConnections": 100, "requestTimeoutSeconds": 5}
    md = with_spec(limits=limits, metricsPort=9500)
    (c,) = deployment(md, "r1", CONFIG, "img@sha256:" + "c" * 64, 1)["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    flags = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert flags["--max-request-bytes"] == "16Mi" and flags["--max-queue"] == "32"
    assert flags["--max-connections"] == "100" and flags["--request-timeout-s"] == "5"
    assert flags["--metrics-port"] == "9500"
    assert {"name": "metrics", "containerPort": 9500, "protocol": "TCP"} in c["ports"]
    svc = serving_plan(md, "r1", CONFIG, "img").service
    assert [p["name"] for p in svc["spec"]["ports"]] == ["http"]  # the Service does not expose metrics


def test_deployment_gpu_target() -> None:
    md = with_spec(hardware={"target": "gpu", "gpu": {"count": 2}, "runtimeClassName": "nvidia"})
    pod = deployment(md, "r1", CONFIG, "img@sha256:" + "c" * 64, 1)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["runtimeClassName"] == "nvidia"
    assert "nodeSelector" not in pod or "kubernetes.io/arch" not in pod["nodeSelector"]


def test_deployment_arm64_target() -> None:
    doc = valid_doc()
    doc["spec"]["serving"]["hardware"] = {"target": "arm64", "nodeSelector": {"site": "edge-1"}}
    doc["spec"]["build"]["platforms"] = ["linux/arm64"]
    pod = deployment(md_from(doc), "r1", CONFIG, "img@sha256:" + "d" * 64, 1)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64", "site": "edge-1"}


def test_deployment_without_build_serves_from_artifact_claim() -> None:
    doc = valid_doc()
    del doc["spec"]["build"]
    md = md_from(doc)
    pod = deployment(md, "rabc", CONFIG, None, 1)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == CONFIG.images.serving
    mount = next(m for m in c["volumeMounts"] if m["name"] == "artifacts")
    assert mount == {"name": "artifacts", "mountPath": "/models", "subPath": "rabc", "readOnly": True}
    vol = next(v for v in pod["volumes"] if v["name"] == "artifacts")
    assert vol["persistentVolumeClaim"] == {"claimName": "digits-artifacts", "readOnly": True}


def test_hpa_owns_replicas() -> None:
    md = with_spec(autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 6})
    plan = serving_plan(md, "r1", CONFIG, "img@sha256:" + "e" * 64)
    assert "replicas" not in plan.deployment["spec"]
    assert plan.hpa is not None
    assert plan.hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "digits",
    }
    assert (plan.hpa["spec"]["minReplicas"], plan.hpa["spec"]["maxReplicas"]) == (2, 6)
    assert plan.hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert plan.pdb is not None and plan.pdb["spec"]["maxUnavailable"] == 1
    fixed = serving_plan(with_spec(replicas=3), "r1", CONFIG, "img")
    assert fixed.hpa is None and fixed.deployment["spec"]["replicas"] == 3


def test_single_replica_gets_no_pdb_and_suspend_scales_to_zero() -> None:
    assert serving_plan(with_spec(replicas=1), "r1", CONFIG, "img").pdb is None
    doc = valid_doc()
    doc["spec"]["suspend"] = True
    doc["spec"]["serving"]["autoscaling"] = {"enabled": True}
    plan = serving_plan(md_from(doc), "r1", CONFIG, "img")
    assert plan.deployment["spec"]["replicas"] == 0
    assert plan.hpa is None and plan.pdb is None


def test_service_and_network_policy() -> None:
    md = with_spec(networkPolicy={"enabled": True, "allowFromPodLabels": {"role": "frontend"}}, port=9000)
    plan = serving_plan(md, "r1", CONFIG, "img")
    svc = plan.service
    assert svc["spec"]["selector"] == meta.selector_labels(md)
    assert svc["spec"]["ports"] == [{"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}]
    np = plan.network_policy
    assert np is not None
    rule, metrics_rule = np["spec"]["ingress"]
    assert rule["ports"] == [{"port": 9000, "protocol": "TCP"}]
    callers = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml"}},
            "podSelector": {"matchLabels": {"role": "frontend"}},
        }
    ]
    assert rule["from"] == callers
    assert metrics_rule == {"from": callers, "ports": [{"port": 9090, "protocol": "TCP"}]}
    policy = {"enabled": True, "allowMetricsFromNamespaceLabels": {"name": "monitoring"}}
    scraped = serving_plan(with_spec(networkPolicy=policy), "r1", CONFIG, "img").network_policy
    assert scraped is not None
    assert scraped["spec"]["ingress"][1]["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    assert service_url(md, CONFIG) == "http://digits.ml.svc.cluster.local:9000/v2/models/digits/infer"


def test_labels_never_copy_parent_labels() -> None:
    doc = valid_doc()
    doc["metadata"]["labels"] = {"argocd.argoproj.io/instance": "x", "team": "vision"}
    md = md_from(doc)
    for obj in serving_plan(md, "r1", CONFIG, "img").objects():
        assert "argocd.argoproj.io/instance" not in obj["metadata"]["labels"]
        assert "team" not in obj["metadata"]["labels"]


def all_manifests() -> list[dict[str, Any]]:
    out = [artifact_claim(md_from(valid_doc()), CONFIG)]
    variants: list[dict[str, Any]] = [
        {},
        {
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4},
            "networkPolicy": {"enabled": True},
        },
        {
            "hardware": {"target": "gpu"},
            "service": {"type": "LoadBalancer"},
            "rollout": {"strategy": "Recreate"},
        },
    ]
    for v in variants:
        md = with_spec(**v)
        out.append(optimize_job(md, revision(md.spec), CONFIG))
        out += serving_plan(md, revision(md.spec), CONFIG, "img@sha256:" + "f" * 64).objects()
    return out


@pytest.mark.parametrize("obj", all_manifests(), ids=lambda o: f"{o['kind']}-{o['metadata']['name']}")
def test_manifest_passes_kubernetes_validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_no_pod_gets_service_link_env_vars() -> None:
    """Kubernetes injects {SERVICE}_PORT=tcp://... for every Service in the namespace unless told not to; a Service
    named like one of our settings (modelship-metrics -> MODELSHIP_METRICS_PORT) would override it."""
    from modelship.resources.plan import render_all

    md = md_from(valid_doc())
    pods = [o["spec"]["template"]["spec"] for o in render_all(md, CONFIG) if o["kind"] in ("Job", "Deployment")]
    assert len(pods) == 3  # optimization Job, build Job, serving Deployment
    assert all(p["enableServiceLinks"] is False for p in pods)


def test_optimize_job_runs_code_only_where_the_spec_allowed_it() -> None:
    doc = copy.deepcopy(valid_doc())
    doc["spec"]["optimization"]["metric"] = {"type": "custom", "callable": "m:score", "codeRef": {"name": "metric"}}
    doc["spec"]["model"]["allowCode"] = True
    job = optimize_job(md_from(doc), "r1", CONFIG)
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert "--allow-code" in c["args"]
    assert {"name": "PYTHONPATH", "value": "/opt/modelship/metric"} in c["env"]
    assert any(v["name"] == "metric-code" for v in pod["volumes"])
    # the same model without allowCode: no flag (the optimizer refuses code), no metric code mounted (the CRD
    # refuses a custom metric without allowCode; a stored spec the operator still sees gets nothing run)
    plain = copy.deepcopy(valid_doc())
    job = optimize_job(md_from(plain), "r1", CONFIG)
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert "--allow-code" not in c["args"] and all(e["name"] != "PYTHONPATH" for e in c["env"])


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and In/NotIn/Exists/DoesNotExist expressions) as the API server reads it."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]  # fmt: skip
        if not ok:
            return False
    return True


def _admits(np: dict[str, Any], namespace: str, ns_labels: dict[str, str], pod: dict[str, str], port: int) -> bool:
    """Whether the policy lets a pod (its labels, its namespace and that namespace's labels) reach ``port``."""
    for rule in np["spec"]["ingress"]:
        if port not in [p["port"] for p in rule["ports"]]:
            continue
        for peer in rule["from"]:
            in_ns = (_selects(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer
                     else namespace == np["metadata"]["namespace"])  # fmt: skip
            if in_ns and ("podSelector" not in peer or _selects(peer["podSelector"], pod)):
                return True
    return False


def test_network_policy_covers_the_candidate_pods_and_lets_the_stable_ones_mirror() -> None:
    """With the Canary strategy the policy selects the candidate's pods too (shadow and live), admits the stable
    pods on the model's port (mirrored requests) and the metrics port (the candidate's offer), and the operator's
    namespace on the metrics port (the analysis), while a stranger still gets nothing."""
    canary = {"strategy": "Canary", "canary": {"shadow": {"percent": 20}}}
    md = with_spec(networkPolicy={"enabled": True, "allowFromPodLabels": {"role": "frontend"}}, rollout=canary)
    config = OperatorConfig(operator_namespace="modelship-system")
    stable_plan = serving_plan(md, "r1", config, "img")
    np = stable_plan.network_policy
    assert np is not None
    stable_pod = stable_plan.deployment["spec"]["template"]["metadata"]["labels"]
    shadow_pod = canary_deployment(md, "r2", config, "img2", 1, live=False)["spec"]["template"]["metadata"]["labels"]
    live_pod = canary_deployment(md, "r2", config, "img2", 1, live=True)["spec"]["template"]["metadata"]["labels"]
    selector = np["spec"]["podSelector"]
    for pod in (stable_pod, shadow_pod, live_pod):
        assert _selects(selector, pod), pod
    # not the stage Jobs' pods, nor another ModelDeployment's
    opt_pod = optimize_job(md, "r2", config)["spec"]["template"]["metadata"]["labels"]
    assert not _selects(selector, opt_pod)
    assert not _selects(selector, {**stable_pod, "app.kubernetes.io/instance": "other",
                                   "modelship.io/modeldeployment": "other"})  # fmt: skip
    ml = {"kubernetes.io/metadata.name": "ml"}
    system = {"kubernetes.io/metadata.name": "modelship-system"}
    # the stable pods reach the candidate on both ports; the frontend the model's port; the operator the metrics
    assert _admits(np, "ml", ml, stable_pod, 8080) and _admits(np, "ml", ml, stable_pod, 9090)
    assert _admits(np, "ml", ml, {"role": "frontend"}, 8080)
    assert _admits(np, "modelship-system", system, {"app": "operator"}, 9090)
    assert not _admits(np, "modelship-system", system, {"app": "operator"}, 8080)
    assert not _admits(np, "ml", ml, {"role": "other"}, 8080) and not _admits(np, "ml", ml, {"role": "other"}, 9090)
    assert not _admits(np, "other", {"kubernetes.io/metadata.name": "other"}, stable_pod, 8080)
    # without the Canary strategy nothing beyond the spec's callers and scrapers
    plain = serving_plan(with_spec(networkPolicy={"enabled": True, "allowFromPodLabels": {"role": "frontend"}}),
                         "r1", config, "img").network_policy  # fmt: skip
    assert plain is not None
    assert not _admits(plain, "ml", ml, stable_pod, 8080)
    assert not _admits(plain, "modelship-system", system, {"app": "operator"}, 9090)
    assert _admits(plain, "ml", ml, {"role": "frontend"}, 8080) and _admits(plain, "ml", ml, {"role": "frontend"}, 9090)


# ---------------------------------------------------------------------------- a savedmodel export's runtime
def _savedmodel_doc(build: bool) -> dict[str, Any]:
    doc = valid_doc()
    doc["spec"]["optimization"]["steps"] = [{"type": "prune", "prune": {"targetSparsity": 0.5}}]
    doc["spec"]["optimization"]["export"] = {"format": "savedmodel"}
    if not build:
        del doc["spec"]["build"]
    return doc


def _context_args(job: dict[str, Any]) -> list[str]:
    pod = job["spec"]["template"]["spec"]
    (context,) = [c for c in pod["initContainers"] if c["args"][:2] == ["build", "context"]]
    return list(context["args"])


def _base_image(job: dict[str, Any]) -> str:
    args = _context_args(job)
    return args[args.index("--base-image") + 1]


def test_a_savedmodel_export_is_served_by_and_built_on_the_tensorflow_capable_runtime() -> None:
    """The serving image (LiteRT) cannot load a SavedModel: its pods exited 'serving a SavedModel needs
    TensorFlow' and crash-looped. A savedmodel export's stock runtime is images.servingTensorflow, by default the
    optimizer image (TensorFlow + the serving runtime's dependencies); a tflite export's stays images.serving."""
    digest = "sha256:" + "a" * 64
    tf_image = "r.example/tf-serving:1"
    pinned = OperatorConfig(images=Images(serving_tensorflow=tf_image))
    for config, expected in ((CONFIG, CONFIG.images.optimizer), (pinned, tf_image)):
        built = md_from(_savedmodel_doc(build=True))
        assert _base_image(build_job(built, "r1", digest, config)) == expected
        buildless = md_from(_savedmodel_doc(build=False))
        (server,) = deployment(buildless, "r1", config, None, 1)["spec"]["template"]["spec"]["containers"]
        assert server["image"] == expected
        assert server["args"][server["args"].index("--model") + 1] == "/models/saved_model"
    tflite = md_from(valid_doc())
    assert _base_image(build_job(tflite, "r1", digest, pinned)) == CONFIG.images.serving
    # the tenant's own choice wins (spec.build.baseImage, spec.serving.image)
    doc = _savedmodel_doc(build=True)
    doc["spec"]["build"]["baseImage"] = "r.example/mine:1"
    assert _base_image(build_job(md_from(doc), "r1", digest, CONFIG)) == "r.example/mine:1"


def test_a_savedmodel_export_with_the_default_resources_gets_room_for_tensorflow() -> None:
    """TensorFlow keeps ~630 MB resident: at the default 512Mi limit the server starts with its request budgets
    at their minimum (over 1 MiB refused). The default resources become 1Gi for a savedmodel export; resources
    the spec sets are kept as they are, and a tflite export keeps the default."""
    server = deployment(md_from(_savedmodel_doc(build=True)), "r1", CONFIG, "img@sha256:" + "d" * 64, 1)
    (c,) = server["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m", "memory": "512Mi"}}
    (c,) = deployment(md_from(valid_doc()), "r1", CONFIG, "img", 1)["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"limits": {"memory": "512Mi"}, "requests": {"cpu": "250m", "memory": "256Mi"}}
    doc = _savedmodel_doc(build=True)
    doc["spec"]["serving"]["resources"] = {"limits": {"memory": "3Gi"}}
    (c,) = deployment(md_from(doc), "r1", CONFIG, "img", 1)["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"limits": {"memory": "3Gi"}}


def _state_volume(job: dict[str, Any]) -> dict[str, Any]:
    (volume,) = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "buildkitd"]
    return dict(volume["emptyDir"])


def test_a_savedmodel_build_gets_room_for_the_tensorflow_capable_base() -> None:
    """BuildKit's state volume holds the base image twice (compressed blobs and unpacked) plus the model's layer:
    the TensorFlow-capable runtime is about 3.3 GiB there, so at the 4Gi that fits the serving image a savedmodel
    build could be evicted for its disk. A savedmodel build gets build_state_size_savedmodel, a tflite build keeps
    build_state_size, each as configured."""
    digest = "sha256:" + "a" * 64
    assert CONFIG.build_state_size_savedmodel == "8Gi" and CONFIG.build_state_size == "4Gi"
    savedmodel, tflite = md_from(_savedmodel_doc(build=True)), md_from(valid_doc())
    for config in (CONFIG, OperatorConfig(build_state_size="5Gi", build_state_size_savedmodel="12Gi")):
        job = build_job(savedmodel, "r1", digest, config)
        kubernetes_validate.validate(job, "1.34", strict=True)
        assert _state_volume(job) == {"sizeLimit": config.build_state_size_savedmodel}
        assert _state_volume(build_job(tflite, "r1", digest, config)) == {"sizeLimit": config.build_state_size}
