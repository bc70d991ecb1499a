"""`helm template` across a matrix of values, checked object by object and field by field, and every rendered
object validated against the Kubernetes 1.34 OpenAPI schemas (kubernetes-validate, strict)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from modelship import __version__
from modelship.api import ModelDeployment
from modelship.api.build import BuildEngine
from modelship.cli import build_parser
from modelship.config import ENV, Images, OperatorConfig, PrometheusConfig
from modelship.resources.canary import canary_deployment
from modelship.resources.serving import deployment
from tests.chart.helm import CHART, Helm, container_env, find, one
from tests.support.specs import valid_doc

RELEASE, NAMESPACE = "ms", "modelship-system"
FULLNAME = "ms-modelship"
SM_API = "monitoring.coreos.com/v1/ServiceMonitor"
PM_API = "monitoring.coreos.com/v1/PodMonitor"
PM = {"analysis.prometheus.podMonitor.enabled": True}
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")

# name -> (values given with --set-json, values files, extra --api-versions)
MATRIX: dict[str, tuple[dict[str, Any], list[Path], list[str]]] = {
    "defaults": ({}, [], []),
    "cluster-wide": ({"operator.clusterWide": True}, [], []),
    "namespaced": ({"operator.watchNamespaces": ["team-a", "team-b"]}, [], []),
    "ci-namespaced": ({}, [CHART / "ci" / "namespaced-values.yaml"], []),
    "ci-pinned": ({}, [CHART / "ci" / "pinned-values.yaml"], []),
    "ci-monitoring": ({}, [CHART / "ci" / "monitoring-values.yaml"], [SM_API]),
    "no-metrics": ({"metrics.enabled": False}, [], []),
    "pod-monitor": (
        {**PM, "analysis.prometheus.podMonitor.labels": {"release": "prom"}, "operator.watchNamespaces": ["a", "b"]},
        [],
        [PM_API],
    ),
    "existing-sa-no-rbac": (
        {"serviceAccount.create": False, "serviceAccount.name": "ops", "rbac.create": False},
        [],
        [],
    ),
    "scheduling": (
        {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                        ]
                    }
                }
            },
            "priorityClassName": "system-cluster-critical",
            "podAnnotations": {"example.com/a": "b"},
            "podLabels": {"team": "ml"},
            "extraEnv": [
                {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
        },
        [],
        [],
    ),
}


def render(helm: Helm, case: str) -> list[dict[str, Any]]:
    values, files, apis = MATRIX[case]
    return helm.template(values, value_files=files, api_versions=apis, release=RELEASE, namespace=NAMESPACE)


def operator_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    dep = one(objs, "Deployment", FULLNAME)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(container)


# ---------------------------------------------------------------------------- every case
@pytest.mark.parametrize("case", sorted(MATRIX))
def test_every_object_is_valid_kubernetes_1_34(helm: Helm, case: str) -> None:
    objs = render(helm, case)
    assert objs
    for obj in objs:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # not a built-in kind: checked in test_service_monitor_*
        kubernetes_validate.validate(obj, "1.34", strict=True)


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_common_invariants(helm: Helm, case: str) -> None:
    objs = render(helm, case)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds.count("Deployment") == 1
    for obj in objs:
        meta = obj["metadata"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE and labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == __version__
        if obj["kind"] in ("Deployment", "Service", "ServiceAccount", "ServiceMonitor", "PodMonitor"):
            assert meta["namespace"] == NAMESPACE, obj["kind"]
    dep = one(objs, "Deployment", FULLNAME)
    spec = dep["spec"]
    # kopf runs standalone: never two operators, not even during a rollout
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    # the chart's modelship-metrics Service would otherwise inject MODELSHIP_METRICS_PORT=tcp://<ip>:8081 into
    # the operator's env, over its own MODELSHIP_METRICS_PORT (the operator crashed on the real node that way)
    assert pod["enableServiceLinks"] is False
    # Pod Security Standards "restricted", as the operator image (uid 65532) expects
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    # the only writable path is an emptyDir at /tmp
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    # resources: requests and a memory limit
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    # the ServiceAccount the pod runs as is the one the (Cluster)RoleBindings name
    sa = pod["serviceAccountName"]
    for binding in find(objs, "ClusterRoleBinding") + find(objs, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    # the args are what `modelship operator` really accepts
    assert container["args"][0] == "operator"
    build_parser().parse_args(container["args"])


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_liveness_probe_hits_the_kopf_liveness_endpoint(helm: Helm, case: str) -> None:
    container = operator_container(render(helm, case))
    args = build_parser().parse_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert args.liveness == f"http://0.0.0.0:{ports['healthz']}/healthz"
    assert probe["periodSeconds"] >= 5 and probe["failureThreshold"] >= 2


# ---------------------------------------------------------------------------- defaults
def test_defaults_namespaced_operator(helm: Helm) -> None:
    """Defaults: namespaced (the `default` namespace), the release namespace excluded and holding the caches."""
    objs = render(helm, "defaults")
    assert sorted(o["kind"] for o in objs) == [
        "Deployment", "Role", "Role", "Role", "RoleBinding", "RoleBinding", "RoleBinding", "Service",
        "ServiceAccount", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]  # fmt: skip
    args = build_parser().parse_args(operator_container(objs)["args"])
    assert args.namespace == ["default"]
    env = container_env(one(objs, "Deployment", FULLNAME))
    assert env["MODELSHIP_OPERATOR_NAMESPACE"] == "modelship-system"
    assert env["MODELSHIP_EXCLUDE_NAMESPACES"] == "kube-system,kube-public,kube-node-lease,modelship-system"
    assert env["MODELSHIP_BUILD_NAMESPACE"] == "modelship-system"


def test_cluster_wide_operator(helm: Helm) -> None:
    objs = render(helm, "cluster-wide")
    assert sorted(o["kind"] for o in objs) == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "Role", "RoleBinding", "RoleBinding", "Service",
        "ServiceAccount", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]  # fmt: skip
    sa = one(objs, "ServiceAccount", FULLNAME)
    assert sa["automountServiceAccountToken"] is True
    binding = one(objs, "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    container = operator_container(objs)
    assert container["image"] == f"modelship/operator:{__version__}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    args = build_parser().parse_args(container["args"])
    assert args.namespace == []  # cluster-wide
    assert (args.log_format, args.log_level, args.workers, args.metrics_port) == ("json", "INFO", 4, 8081)


def test_default_env_gives_the_operators_own_defaults(helm: Helm) -> None:
    """The chart's defaults change nothing the operator would do without them (images, retries, storage...)."""
    env = container_env(one(render(helm, "defaults"), "Deployment", FULLNAME))
    own = "modelship-system"  # the release namespace: the operator's own (caches there; never a tenant's)
    defaults = OperatorConfig()
    # the chart runs the build Jobs in its own namespace too (an operator without it, in each tenant's)
    assert OperatorConfig.from_env(env) == OperatorConfig(
        operator_namespace=own, exclude_namespaces=defaults.exclude_namespaces | {own}, build_namespace=own
    )
    assert env["MODELSHIP_OPERATOR_IMAGE"] == f"modelship/operator:{__version__}"
    assert "MODELSHIP_ARTIFACT_STORAGE_CLASS" not in env and "MODELSHIP_BUILD_REGISTRY" not in env


def test_pinned_images_by_digest_and_settings_reach_the_operator_config(helm: Helm) -> None:
    objs = render(helm, "ci-pinned")
    container = operator_container(objs)
    # image.digest wins over image.tag
    assert container["image"] == f"registry.example.com/modelship/operator@{D1}"
    env = container_env(one(objs, "Deployment", FULLNAME))
    cfg = OperatorConfig.from_env(env)
    assert cfg.images == Images(
        operator=f"registry.example.com/modelship/operator@{D1}",  # the build Job's context renderer
        optimizer=f"registry.example.com/modelship/optimizer@{D2}",
        serving=f"registry.example.com/modelship/serving@{D3}",
        buildkit="docker.io/moby/buildkit:v0.23.2-rootless",
        kaniko="gcr.io/kaniko-project/executor:v1.23.2",
        pull_policy="Always",
    )
    assert (cfg.job_ttl_seconds, cfg.max_job_attempts, cfg.retry_base_seconds) == (600, 5, 30.0)
    assert (cfg.artifact_storage_size, cfg.artifact_storage_class) == ("10Gi", "fast")
    assert (cfg.build_registry, cfg.build_engine) == ("registry.example.com/models", BuildEngine.KANIKO)
    pod = one(objs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


@pytest.mark.parametrize("which", ["optimizer", "serving", "servingTensorflow", "buildkit", "kaniko"])
def test_each_job_image_digest_wins_over_its_tag(helm: Helm, which: str) -> None:
    variable = "MODELSHIP_" + re.sub(r"(?<!^)([A-Z])", r"_\1", which).upper() + "_IMAGE"
    values = {f"images.{which}": {"repository": f"r.example/{which.lower()}", "tag": "9.9", "digest": D2}}
    env = container_env(one(helm.template(values), "Deployment", FULLNAME))
    assert env[variable] == f"r.example/{which.lower()}@{D2}"
    tag_only = {f"images.{which}": {"repository": f"r.example/{which.lower()}", "tag": "9.9"}}
    env = container_env(one(helm.template(tag_only), "Deployment", FULLNAME))
    assert env[variable] == f"r.example/{which.lower()}:9.9"


def test_the_tensorflow_serving_image_defaults_to_the_optimizer_image(helm: Helm) -> None:
    """images.servingTensorflow left empty: no variable, so a savedmodel export runs on images.optimizer, pinned
    or not (the optimizer image carries TensorFlow and the serving runtime's dependencies)."""
    values = {"images.optimizer": {"repository": "r.example/optimizer", "digest": D2}}
    env = container_env(one(helm.template(values), "Deployment", FULLNAME))
    assert "MODELSHIP_SERVING_TENSORFLOW_IMAGE" not in env
    cfg = OperatorConfig.from_env(env)
    assert cfg.images.serving_for(savedmodel=True) == f"r.example/optimizer@{D2}"
    assert cfg.images.serving_for(savedmodel=False) == f"modelship/serving:{__version__}"


@pytest.mark.parametrize("pin", [{"tag": "2.1"}, {"digest": D2}])
def test_a_tensorflow_serving_pin_without_its_repository_fails_the_render(helm: Helm, pin: dict[str, str]) -> None:
    """A tag or digest under images.servingTensorflow with the repository left empty would be ignored (savedmodel
    exports on images.optimizer, not on the pinned image): the render fails naming the value instead."""
    err = helm.template_error({"images.servingTensorflow": {"repository": "", **pin}})
    assert "images.servingTensorflow.repository is empty" in err and "images.servingTensorflow.tag/digest" in err


RELEASE_NAMESPACE = "(helm --namespace)"
"""Not a value: the release namespace to render in."""


def _template(helm: Helm, values: dict[str, Any]) -> list[dict[str, Any]]:
    values = dict(values)
    namespace = values.pop(RELEASE_NAMESPACE, "modelship-system")
    return helm.template(values, namespace=namespace)


# A value per variable the operator reads, different from its default (the chart's values that produce it).
ENV_SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "MODELSHIP_OPERATOR_IMAGE": ("r.example/op:1", {"image": {"repository": "r.example/op", "tag": "1"}}),
    "MODELSHIP_OPTIMIZER_IMAGE": ("r.example/o:1", {"images.optimizer": {"repository": "r.example/o", "tag": "1"}}),
    "MODELSHIP_SERVING_IMAGE": ("r.example/s:1", {"images.serving": {"repository": "r.example/s", "tag": "1"}}),
    "MODELSHIP_SERVING_TENSORFLOW_IMAGE": (
        "r.example/tf:1",
        {"images.servingTensorflow": {"repository": "r.example/tf", "tag": "1"}},
    ),
    "MODELSHIP_BUILDKIT_IMAGE": ("r.example/b:1", {"images.buildkit": {"repository": "r.example/b", "tag": "1"}}),
    "MODELSHIP_KANIKO_IMAGE": ("r.example/k:1", {"images.kaniko": {"repository": "r.example/k", "tag": "1"}}),
    "MODELSHIP_IMAGE_PULL_POLICY": ("Always", {"images.pullPolicy": "Always"}),
    "MODELSHIP_ARTIFACT_STORAGE_SIZE": ("9Gi", {"artifacts.storageSize": "9Gi"}),
    "MODELSHIP_ARTIFACT_STORAGE_CLASS": ("fast", {"artifacts.storageClassName": "fast"}),
    "MODELSHIP_JOB_TTL_SECONDS": ("60", {"jobs.ttlSecondsAfterFinished": 60}),
    "MODELSHIP_MAX_JOB_ATTEMPTS": ("7", {"jobs.maxAttempts": 7}),
    "MODELSHIP_RETRY_BASE_SECONDS": ("2.5", {"jobs.retryBaseSeconds": 2.5}),
    "MODELSHIP_RESYNC_SECONDS": ("30", {"operator.resyncSeconds": 30}),
    "MODELSHIP_CLUSTER_DOMAIN": ("corp.local", {"operator.clusterDomain": "corp.local"}),
    "MODELSHIP_BUILD_REGISTRY": ("registry.example.com/models", {"build.registry": "registry.example.com/models"}),
    "MODELSHIP_BUILD_ENGINE": ("kaniko", {"build.engine": "kaniko"}),
    "MODELSHIP_ARTIFACT_REPOSITORY": (
        "registry.example.com/artifacts",
        {"artifacts.repository": "registry.example.com/artifacts"},
    ),
    "MODELSHIP_ARTIFACT_INSECURE_REGISTRY": ("true", {"artifacts.insecureRegistry": True}),
    "MODELSHIP_OPERATOR_NAMESPACE": ("ml-platform", {RELEASE_NAMESPACE: "ml-platform"}),  # always the release's
    "MODELSHIP_EXCLUDE_NAMESPACES": ("kube-system,modelship-system", {"operator.excludeNamespaces": ["kube-system"]}),
    "MODELSHIP_REVISION_CACHE_ENTRIES": ("7", {"revisionCache.maxEntries": 7}),
    "MODELSHIP_REVISION_CACHE_BYTES": ("4096", {"revisionCache.maxBytes": 4096}),
    "MODELSHIP_BUILD_NAMESPACE": ("builds", {"build.namespace": "builds"}),
    "MODELSHIP_BUILD_PUSH_SECRETS": ('{"r.example":"push"}', {"build.pushSecrets": {"r.example": "push"}}),
    "MODELSHIP_BUILD_STATE_SIZE": ("9Gi", {"build.stateSize": "9Gi"}),
    "MODELSHIP_BUILD_STATE_SIZE_SAVEDMODEL": ("13Gi", {"build.stateSizeSavedModel": "13Gi"}),
    "MODELSHIP_PROMETHEUS_URL": (
        "http://prom.monitoring:9090",
        {"analysis.prometheus.url": "http://prom.monitoring:9090"},
    ),
    "MODELSHIP_PROMETHEUS_REVISION_LABEL": ("rev", {"analysis.prometheus.revisionLabel": "rev"}),
    "MODELSHIP_PROMETHEUS_NAMESPACE_LABEL": (
        "kubernetes_namespace",
        {"analysis.prometheus.namespaceLabel": "kubernetes_namespace"},
    ),
    "MODELSHIP_PROMETHEUS_NAME_LABEL": ("md", {"analysis.prometheus.nameLabel": "md"}),
    "MODELSHIP_PROMETHEUS_TIMEOUT_SECONDS": ("2.5", {"analysis.prometheus.timeoutSeconds": 2.5}),
    "MODELSHIP_PROMETHEUS_TOKEN_FILE": (
        "/etc/modelship/prometheus-token/tok",
        {"analysis.prometheus.bearerTokenSecret": {"name": "prom-token", "key": "tok"}},
    ),
    "MODELSHIP_PROMETHEUS_CA_FILE": (
        "/etc/modelship/prometheus-ca/ca.pem",
        {"analysis.prometheus.caSecret": {"name": "prom-ca", "key": "ca.pem"}},
    ),
    "MODELSHIP_POLICY_ALLOWED_IMAGE_PREFIXES": (
        '["r.example/ok/"]',
        {"policy.allowedImagePrefixes": ["r.example/ok/"]},
    ),
    "MODELSHIP_POLICY_ALLOWED_REPOSITORY_PREFIXES": (
        '["r.example/{namespace}/"]',
        {"policy.allowedRepositoryPrefixes": ["r.example/{namespace}/"]},
    ),
    "MODELSHIP_POLICY_ALLOW_SERVICE_ACCOUNTS": ("true", {"policy.allowServiceAccounts": True}),
    "MODELSHIP_POLICY_ALLOW_CODE": ("true", {"policy.allowCode": True}),
    "MODELSHIP_POLICY_ALLOW_TOLERATIONS": ("true", {"policy.allowTolerations": True}),
    "MODELSHIP_POLICY_ALLOW_NODE_SELECTORS": ("false", {"policy.allowNodeSelectors": False}),
    "MODELSHIP_POLICY_ALLOW_CREDENTIAL_SECRETS": ("false", {"policy.allowCredentialSecrets": False}),
    "MODELSHIP_POLICY_ALLOW_CROSS_NAMESPACE_GATEWAYS": ("true", {"policy.allowCrossNamespaceGateways": True}),
    "MODELSHIP_POLICY_ALLOWED_BUILD_ENGINES": ('["buildkit"]', {"policy.allowedBuildEngines": ["buildkit"]}),
}


def test_the_chart_sets_exactly_the_variables_the_operator_reads(helm: Helm) -> None:
    """Both directions: every MODELSHIP_* variable the chart's Deployment can set is one config.ENV reads, and
    every variable config.ENV reads is one the chart sets (some only when their value is given)."""
    chart_text = (CHART / "templates" / "deployment.yaml").read_text()
    in_template = set(re.findall(r"name: (MODELSHIP_[A-Z_]+)", chart_text))
    assert in_template == set(ENV)
    everything = _template(helm, {k: v for _name, (_raw, values) in ENV_SAMPLES.items() for k, v in values.items()})
    rendered = {n for n in container_env(one(everything, "Deployment", FULLNAME)) if n.startswith("MODELSHIP_")}
    assert rendered == set(ENV)


@pytest.mark.parametrize("name", sorted(ENV_SAMPLES))
def test_each_variable_changes_the_configuration(helm: Helm, name: str) -> None:
    """Each variable is really read: its chart value, rendered and read back, changes OperatorConfig (so a chart
    setting the operator ignores cannot pass)."""
    assert set(ENV_SAMPLES) == set(ENV)
    raw, values = ENV_SAMPLES[name]
    env = container_env(one(_template(helm, values), "Deployment", FULLNAME))
    assert env[name] == raw
    assert OperatorConfig.from_env(env) != OperatorConfig.from_env(container_env(one(helm.template(), "Deployment",
                                                                                        FULLNAME)))  # fmt: skip
    assert OperatorConfig.from_env({name: raw}) != OperatorConfig()


# ---------------------------------------------------------------------------- namespaced mode
@pytest.mark.parametrize("case", ["namespaced", "ci-namespaced"])
def test_namespaced_mode_emits_roles_not_cluster_roles(helm: Helm, case: str) -> None:
    objs = render(helm, case)
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    roles = [r for r in find(objs, "Role") if r["metadata"]["name"] == FULLNAME]
    bindings = [b for b in find(objs, "RoleBinding") if b["metadata"]["name"] == FULLNAME]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}
    args = build_parser().parse_args(operator_container(objs)["args"])
    assert args.namespace == ["team-a", "team-b"]


def test_namespaced_args_and_logging_from_ci_values(helm: Helm) -> None:
    args = build_parser().parse_args(operator_container(render(helm, "ci-namespaced"))["args"])
    assert (args.log_format, args.log_level, args.workers) == ("plain", "DEBUG", 2)


# ---------------------------------------------------------------------------- metrics and ServiceMonitor
def test_metrics_service_targets_the_operator_pod(helm: Helm) -> None:
    objs = render(helm, "defaults")
    svc = one(objs, "Service", f"{FULLNAME}-metrics")
    dep = one(objs, "Deployment", FULLNAME)
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    container = operator_container(objs)
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert build_parser().parse_args(container["args"]).metrics_port == 8081


def test_metrics_off_means_no_service_no_port_and_metrics_port_zero(helm: Helm) -> None:
    objs = render(helm, "no-metrics")
    assert not find(objs, "Service")
    container = operator_container(objs)
    assert [p["name"] for p in container["ports"]] == ["healthz"]
    assert build_parser().parse_args(container["args"]).metrics_port == 0


def test_service_monitor_off_by_default_even_where_the_api_exists(helm: Helm) -> None:
    assert not find(helm.template(api_versions=[SM_API]), "ServiceMonitor")


def test_service_monitor_needs_the_monitoring_api(helm: Helm) -> None:
    values, files, _ = MATRIX["ci-monitoring"]
    assert not find(helm.template(values, value_files=files), "ServiceMonitor")  # API absent: skipped


def test_service_monitor_scrapes_the_metrics_service(helm: Helm) -> None:
    objs = render(helm, "ci-monitoring")
    sm = one(objs, "ServiceMonitor", FULLNAME)
    svc = one(objs, "Service", f"{FULLNAME}-metrics")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"
    assert svc["spec"]["ports"][0]["port"] == 9090
    assert build_parser().parse_args(operator_container(objs)["args"]).metrics_port == 9090


# ---------------------------------------------------------------------------- PodMonitor of the serving pods
def serving_pods() -> list[dict[str, str]]:
    """The labels of the serving pods the operator renders: a stable Deployment's and a candidate's (shadow and
    live), and the ports of their server container."""
    doc = valid_doc()
    doc["metadata"].update(namespace="team-a", uid="u-1")
    doc["spec"]["serving"]["rollout"] = {"strategy": "Canary", "canary": {"shadow": {"percent": 20}}}
    md = ModelDeployment.from_body(doc)
    deps = [deployment(md, "r1", OperatorConfig(), "img", 1)]
    deps += [canary_deployment(md, "r2", OperatorConfig(), "img", 1, live=live) for live in (False, True)]
    for dep in deps:
        (server,) = dep["spec"]["template"]["spec"]["containers"]
        assert "metrics" in [p["name"] for p in server["ports"]]
    return [dep["spec"]["template"]["metadata"]["labels"] for dep in deps]


def test_pod_monitor_off_by_default_even_where_the_api_exists(helm: Helm) -> None:
    assert not find(helm.template(api_versions=[PM_API]), "PodMonitor")
    assert "PodMonitor" not in helm.notes()  # not asked for: no warning either


def test_pod_monitor_needs_the_monitoring_api_and_the_notes_say_so(helm: Helm) -> None:
    assert not find(helm.template(PM, api_versions=[SM_API]), "PodMonitor")  # ServiceMonitor alone is not enough
    # `helm install` (whose --dry-run=client serves no monitoring API; it takes no --api-versions) warns
    notes = helm.notes(PM)
    assert "WARNING: analysis.prometheus.podMonitor.enabled is true" in notes and "PodMonitor, so none" in notes


def test_pod_monitor_scrapes_every_serving_pod_with_the_labels_the_queries_use(helm: Helm) -> None:
    pm = one(render(helm, "pod-monitor"), "PodMonitor", f"{FULLNAME}-serving")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["metadata"]["labels"]["release"] == "prom"
    spec = pm["spec"]
    selector = spec["selector"]["matchLabels"]
    for pod_labels in serving_pods():
        assert selector.items() <= pod_labels.items(), pod_labels
    operator_pod = one(render(helm, "pod-monitor"), "Deployment", FULLNAME)["spec"]["template"]["metadata"]
    assert not selector.items() <= operator_pod["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": ["a", "b"]}
    # prometheus-operator writes each pod label under its sanitized name, and the namespace as `namespace`
    written = {re.sub(r"[^a-zA-Z0-9_]", "_", k) for k in spec["podTargetLabels"]}
    default = PrometheusConfig()
    assert written == {default.name_label, default.revision_label} and default.namespace_label == "namespace"
    assert set(spec["podTargetLabels"]) <= set(serving_pods()[0])
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}


def test_pod_monitor_cluster_wide_and_other_label_names(helm: Helm) -> None:
    values = {**PM, "operator.clusterWide": True, "analysis.prometheus.revisionLabel": "rev",
              "analysis.prometheus.namespaceLabel": "kubernetes_namespace"}  # fmt: skip
    objs = helm.template(values, api_versions=[PM_API], release=RELEASE, namespace=NAMESPACE)
    spec = one(objs, "PodMonitor", f"{FULLNAME}-serving")["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_namespace"], "targetLabel": "kubernetes_namespace"},
        {"sourceLabels": ["__meta_kubernetes_pod_label_modelship_io_revision"], "targetLabel": "rev"},
    ]
    env = container_env(one(objs, "Deployment", FULLNAME))
    assert env["MODELSHIP_PROMETHEUS_REVISION_LABEL"] == "rev"  # the operator queries the label it writes


# ---------------------------------------------------------------------------- the rest of the knobs
def test_existing_service_account_and_no_rbac(helm: Helm) -> None:
    objs = render(helm, "existing-sa-no-rbac")
    assert not find(objs, "ServiceAccount")
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not find(objs, kind), kind
    pod = one(objs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops"


def test_existing_service_account_needs_a_name(helm: Helm) -> None:
    err = helm.template_error({"serviceAccount.create": False})
    assert "serviceAccount.name is required" in err


def test_scheduling_annotations_labels_and_extra_env(helm: Helm) -> None:
    objs = render(helm, "scheduling")
    dep = one(objs, "Deployment", FULLNAME)
    tmpl = dep["spec"]["template"]
    values = MATRIX["scheduling"][0]
    pod = tmpl["spec"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert tmpl["metadata"]["annotations"] == {"example.com/a": "b"}
    assert tmpl["metadata"]["labels"]["team"] == "ml"
    # pod labels never leak into the selector (it is immutable)
    assert "team" not in dep["spec"]["selector"]["matchLabels"]
    env = operator_container(objs)["env"]
    assert env[-2:] == values["extraEnv"]


def test_fullname_override_names_everything(helm: Helm) -> None:
    objs = helm.template({"fullnameOverride": "modelship-operator"})
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("Deployment", "modelship-operator") in names
    assert ("Role", "modelship-operator") in names and ("Role", "modelship-operator-own") in names
    assert ("Service", "modelship-operator-metrics") in names
    cluster = helm.template({"fullnameOverride": "modelship-operator", "operator.clusterWide": True})
    assert ("ClusterRole", "modelship-operator") in {(o["kind"], o["metadata"]["name"]) for o in cluster}


# ---------------------------------------------------------------------------- build namespace
def test_a_dedicated_build_namespace_is_rendered_privileged_when_asked(helm: Helm) -> None:
    """Rootless BuildKit needs seccomp/AppArmor Unconfined (outside Pod Security baseline): the build namespace the
    chart creates is labelled privileged; the release namespace (the default) is left as the admin made it."""
    objs = helm.template({"build.namespace": "modelship-builds", "build.createNamespace": True})
    ns = one(objs, "Namespace", "modelship-builds")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    env = container_env(one(objs, "Deployment", FULLNAME))
    assert env["MODELSHIP_BUILD_NAMESPACE"] == "modelship-builds"
    assert not find(helm.template({"build.createNamespace": True}), "Namespace")  # the release's: not ours
    assert not find(helm.template({"build.namespace": "modelship-builds"}), "Namespace")


def test_the_prometheus_token_and_ca_secrets_are_mounted_read_only(helm: Helm) -> None:
    values = {"analysis.prometheus": {"url": "https://prom.monitoring:9090",
                                      "bearerTokenSecret": {"name": "prom-token", "key": "token"},
                                      "caSecret": {"name": "prom-ca", "key": "ca.crt"}}}  # fmt: skip
    dep = one(_template(helm, values), "Deployment", FULLNAME)
    pod = dep["spec"]["template"]["spec"]
    env = container_env(dep)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert volumes["prometheus-token"]["secret"] == {"secretName": "prom-token",
                                                     "items": [{"key": "token", "path": "token"}]}  # fmt: skip
    assert volumes["prometheus-ca"]["secret"]["secretName"] == "prom-ca"
    assert mounts["prometheus-token"]["readOnly"] and mounts["prometheus-ca"]["readOnly"]
    assert env["MODELSHIP_PROMETHEUS_TOKEN_FILE"].startswith(mounts["prometheus-token"]["mountPath"] + "/")
    assert env["MODELSHIP_PROMETHEUS_CA_FILE"].startswith(mounts["prometheus-ca"]["mountPath"] + "/")
    config = OperatorConfig.from_env(env).prometheus
    assert config.url == "https://prom.monitoring:9090" and config.token_file == "/etc/modelship/prometheus-token/token"
    # without them: no volume, and no URL (the pods are read)
    plain = one(helm.template(), "Deployment", FULLNAME)
    assert not {"prometheus-token", "prometheus-ca"} & {v["name"] for v in plain["spec"]["template"]["spec"]["volumes"]}
    assert OperatorConfig.from_env(container_env(plain)).prometheus.url is None
