"""The chart's RBAC is exactly modelship.rbac.operator_rules(), itself generated from the kinds table: the
templates cannot call Python, so hack/sync-chart-crds writes the rules into templates/_rules.tpl and these tests
keep the two from drifting; plus least-privilege checks that hold whatever the rules say."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from modelship.rbac import build_namespace_rules, helm_rules_template, operator_rules, own_namespace_rules
from tests.chart.helm import CHART, Helm, find, one

FULLNAME = "ms-modelship"
BUILD_ROLE = f"{FULLNAME}-builds"
NAMESPACES = ["team-a", "team-b", "team-c"]


RELEASE_NS = "modelship-system"


def cluster_objs(helm: Helm) -> list[dict[str, Any]]:
    return helm.template({"operator.clusterWide": True})


def namespaced_objs(helm: Helm) -> list[dict[str, Any]]:
    return helm.template({"operator.watchNamespaces": NAMESPACES})


def tenant_roles(objs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The Roles in watched namespaces (not the operator's own-namespace Role)."""
    return [r for r in find(list(objs), "Role") if r["metadata"]["namespace"] != RELEASE_NS]


def all_rules(objs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r) for o in objs if o["kind"] in ("ClusterRole", "Role") for r in o["rules"]]


def test_rules_template_is_generated_from_the_table() -> None:
    committed = (CHART / "templates" / "_rules.tpl").read_text()
    assert committed == helm_rules_template(), "run hack/sync-chart-crds"
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert "apiGroups" not in helpers, "rules are written in _rules.tpl only"


def test_cluster_role_is_operator_rules_exactly(helm: Helm) -> None:
    role = one(cluster_objs(helm), "ClusterRole", FULLNAME)
    assert role["rules"] == operator_rules(cluster_scope=True)


def test_each_role_is_namespaced_operator_rules_exactly(helm: Helm) -> None:
    roles = tenant_roles(namespaced_objs(helm))
    assert sorted(r["metadata"]["namespace"] for r in roles) == NAMESPACES
    for role in roles:
        assert role["metadata"]["name"] == FULLNAME
        assert role["rules"] == operator_rules(cluster_scope=False)


def test_namespaced_rules_need_nothing_cluster_scoped() -> None:
    cluster_only = {"namespaces", "customresourcedefinitions", "nodes", "persistentvolumes", "clusterroles"}
    for rule in operator_rules(cluster_scope=False):
        assert not cluster_only & set(rule["resources"]), rule


def test_one_watched_namespace_one_role(helm: Helm) -> None:
    objs = helm.template({"operator.watchNamespaces": ["team-a"]})
    assert len(tenant_roles(objs)) == 1 and len(find(objs, "RoleBinding")) == 3  # team-a's, the own and build ones
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")


def test_defaults_are_namespaced_and_cluster_wide_is_explicit(helm: Helm) -> None:
    """`helm install` with defaults: a Role in `default` only, nothing cluster-scoped; cluster-wide only with
    operator.clusterWide=true."""
    objs = helm.template()
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    assert [r["metadata"]["namespace"] for r in tenant_roles(objs)] == ["default"]
    assert find(cluster_objs(helm), "ClusterRole")


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_configmaps_only_in_the_operators_own_namespace(helm: Helm, mode: str) -> None:
    """The revision caches live in the release namespace: a Role there, and no ConfigMap write anywhere else (a
    tenant's ConfigMaps are never the operator's to write); elsewhere only get, by name: whether a ConfigMap a stage
    Job would mount exists (asked as metadata)."""
    objs = cluster_objs(helm) if mode == "cluster" else namespaced_objs(helm)
    own = one(objs, "Role", f"{FULLNAME}-own")
    assert own["metadata"]["namespace"] == RELEASE_NS and own["rules"] == own_namespace_rules()
    assert own_namespace_rules() == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create",
                                                                                              "patch"]}]  # fmt: skip
    binding = one(objs, "RoleBinding", f"{FULLNAME}-own")
    assert binding["metadata"]["namespace"] == RELEASE_NS
    assert binding["roleRef"]["name"] == f"{FULLNAME}-own"
    others = [o for o in objs if o["kind"] in ("ClusterRole", "Role") and o["metadata"]["name"] == FULLNAME]
    elsewhere = [r for o in others for r in o["rules"] if "configmaps" in r["resources"]]
    assert others and elsewhere == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}] * len(others)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"operator.watchNamespaces": ["team-a", "kube-system"]}, "kube-system is excluded"),
        ({"operator.watchNamespaces": [RELEASE_NS]}, f"{RELEASE_NS} is excluded"),
        ({"operator.watchNamespaces": ["team-a"], "operator.excludeNamespaces": ["team-a"]}, "team-a is excluded"),
        ({"operator.watchNamespaces": []}, "operator.watchNamespaces is empty"),
    ],
)
def test_watching_an_excluded_namespace_fails_the_install(helm: Helm, values: dict[str, Any], says: str) -> None:
    assert says in helm.template_error(values)


@pytest.mark.parametrize("values", [{}, {"operator.watchNamespaces": ["team-a"]}, {"build.namespace": "builds"}])
def test_the_build_namespace_role_is_build_namespace_rules_exactly(helm: Helm, values: dict[str, Any]) -> None:
    """Both modes: build Jobs are created and deleted in the build namespace (the release namespace unless
    build.namespace), everything the operator watches is listed there, and Events are listed (a build Job without a
    pod: the Job controller's FailedCreate), never watched; nothing else."""
    objs = helm.template(values)
    role = one(objs, "Role", BUILD_ROLE)
    assert role["metadata"]["namespace"] == values.get("build.namespace", "modelship-system")
    assert role["rules"] == build_namespace_rules()
    binding = one(objs, "RoleBinding", BUILD_ROLE)
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["roleRef"]["name"] == BUILD_ROLE
    verbs = {r["resources"][0]: set(r["verbs"]) for r in role["rules"]}
    assert verbs["jobs"] == {"list", "watch", "create", "delete"}
    assert verbs["events"] == {"list"}
    assert all(v == {"list", "watch"} for res, v in verbs.items() if res not in ("jobs", "events"))


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_least_privilege(helm: Helm, mode: str) -> None:
    objs = cluster_objs(helm) if mode == "cluster" else namespaced_objs(helm)
    rules = all_rules(objs)
    assert rules
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames/nonResourceURLs surprises
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        # an API group never carries a version: "admissionregistration.k8s.io/v1" would match nothing
        assert not any("/" in g for g in rule["apiGroups"]), rule
        # nothing that reads credentials or grants more rights; Secrets by name only (get: whether one a stage Job
        # would mount exists, asked as metadata), never listed or watched
        forbidden = {"serviceaccounts", "serviceaccounts/token", "pods/exec", "pods/attach"}
        assert not forbidden & set(rule["resources"]), rule
        if "secrets" in rule["resources"]:
            assert rule["resources"] == ["secrets"] and rule["verbs"] == ["get"], rule
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        assert "rbac.authorization.k8s.io" not in rule["apiGroups"], rule
        # kopf runs standalone: no peering objects, no leases
        assert "kopf.dev" not in rule["apiGroups"] and "coordination.k8s.io" not in rule["apiGroups"], rule
    # Jobs are immutable: never patched or updated
    (jobs,) = [r for r in rules if r["resources"] == ["jobs"]][:1]
    assert "patch" not in jobs["verbs"] and "update" not in jobs["verbs"]


def test_rbac_create_false_renders_no_rbac(helm: Helm) -> None:
    for values in ({"rbac.create": False}, {"rbac.create": False, "operator.clusterWide": True}):
        objs = helm.template(values)
        assert not [o for o in objs if o["apiVersion"].startswith("rbac.authorization.k8s.io/")], values


def test_only_verbs_the_code_uses() -> None:
    """What no code path calls is not granted (Events were never patched, and a single object is read only before
    the first write of its name, to see who controls it: the children the operator writes, never Pods or
    ModelDeployments; a Secret or ConfigMap a stage Job would mount, by name, to see that it exists; and the
    ReplicaSet a serving pod's controller reference names, to check the reference's uid: get only, never list or
    watch); owner references that block deletion need update on the owner's finalizers
    (OwnerReferencesPermissionEnforcement, e.g. OpenShift)."""
    rules = operator_rules(cluster_scope=True)
    by_resource = {(g, res): r["verbs"] for r in rules for g in r["apiGroups"] for res in r["resources"]}
    assert by_resource[("apps", "replicasets")] == ["get"]
    # Events: posted, and listed (a stage Job without a pod: the Job controller's FailedCreate), never watched
    assert by_resource[("", "events")] == ["create", "list"] and ("events.k8s.io", "events") not in by_resource
    readable = {res for (_g, res), verbs in by_resource.items() if "get" in verbs}
    assert readable == {"jobs", "deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets",
                        "networkpolicies", "httproutes", "persistentvolumeclaims", "secrets", "configmaps",
                        "replicasets"}  # fmt: skip
    assert by_resource[("", "secrets")] == by_resource[("", "configmaps")] == ["get"]
    assert by_resource[("modelship.io", "modeldeployments/finalizers")] == ["update"]
    assert by_resource[("modelship.io", "modeldeployments")] == ["list", "watch"]  # never writes spec
    # only what the spec can turn off is ever deleted; the garbage collector removes the rest with its owner
    deletable = {res for (_g, res), verbs in by_resource.items() if "delete" in verbs}
    assert deletable == {"horizontalpodautoscalers", "poddisruptionbudgets", "networkpolicies", "httproutes"}
