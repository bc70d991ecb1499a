"""Issue 14 without a cluster: ownership judged before any write, stage results bound to the Job the operator
created and to its template, images only from spec.build.repository, and the gate verdict the operator's."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from modelship.api.gate import Reported, candidate_names, verify
from modelship.api.optimization import Optimization
from modelship.api.status import ImageStatus, Reason, StageName
from modelship.controller.observe import JobState, Observed, job_observation, runs_template
from modelship.controller.ownership import judge, name_conflict
from modelship.controller.reconcile import Reconciler
from modelship.controller.stages.build import build, in_repository
from modelship.controller.stages.optimize import optimize
from modelship.controller.stages.resolve import Known
from modelship.controller.store import Store
from modelship.resources.artifact import pushed_here, servable
from modelship.resources.meta import controlled_by
from modelship.resources.serving import ServedArtifact
from tests.support.specs import valid_doc
from tests.unit.test_loud_failures import MemoryKube, md_body, optimized, stalled
from tests.unit.test_plan import CONFIG, DIGEST, IMAGE, job, make_md, summary
from tests.unit.test_stages import ARTIFACT_CONFIG, PASSED, ctx, result

UID = "u-1"
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "digits", "namespace": "ml"}}


def owned_by(uid: str, kind: str = "ModelDeployment", controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "name": "x", "uid": uid, "controller": controller}


# ---- item 1: own only what you created ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refs", "conflict", "holder"),
    [
        (None, False, ""),  # nothing has the name: create it
        ([owned_by(UID)], False, ""),  # ours
        ([], True, "no owner"),
        ([owned_by("old-uid")], True, "controlled by ModelDeployment x (uid old-uid)"),  # deleted and re-created
        ([owned_by("rs", kind="ReplicaSet")], True, "controlled by ReplicaSet"),
        ([owned_by(UID, controller=False)], True, "not controlled by this ModelDeployment"),  # owner, not controller
    ],
)
def test_only_what_this_modeldeployment_controls_is_written(refs: Any, conflict: bool, holder: str) -> None:
    live = None if refs is None else {**SERVICE, "metadata": {**SERVICE["metadata"], "ownerReferences": refs}}
    found = judge(SERVICE, live, UID)
    assert (found is not None) is conflict
    if found is not None:
        assert holder in str(found) and str(found).startswith("Service/digits")
        failure = name_conflict([found])
        assert failure.reason == Reason.NAME_CONFLICT and failure.stage == StageName.DEPLOY
        assert "Service/digits" in failure.message and "left untouched" in failure.message


class ForeignKube(MemoryKube):
    """The API server holds objects the store never saw (no labels: the watch does not mirror them)."""

    def __init__(self, store: Store, foreign: dict[tuple[str, str], dict[str, Any]]) -> None:
        super().__init__(store)
        self.foreign = foreign
        self.writes: list[str] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.foreign.get((kind, name))

    def apply(self, obj: dict[str, Any], uid: str) -> dict[str, Any]:
        self.writes.append(f"apply {obj['kind']}")
        return obj

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(f"create {obj['kind']}")
        return obj


def test_a_name_conflict_stalls_and_writes_nothing_but_status() -> None:
    """A user's Service named like the ModelDeployment: nothing is applied (not even the other objects), the
    ModelDeployment is Stalled NameConflict naming it, with an Event."""
    store = Store()
    body = md_body(build={"enabled": False})
    store.put("ModelDeployment", body)
    optimized(store, body)
    foreign = {("Service", "digits"): {**SERVICE, "metadata": {**SERVICE["metadata"], "uid": "s-1"}}}
    kube = ForeignKube(store, foreign)
    Reconciler(kube, store, CONFIG).reconcile("ml", "digits")  # type: ignore[arg-type]
    assert kube.writes == []
    cond = stalled(kube, store)
    assert (cond["status"], cond["reason"]) == ("True", "NameConflict")
    assert "Service/digits (no owner)" in cond["message"]
    assert ("Warning", "ReadyNameConflict", cond["message"]) in kube.events


# ---- item 2: results bound to the Job the operator created --------------------------------------------------

TEMPLATE = {"name": "optimize", "image": "modelship/optimizer:0.1.0", "args": ["optimize", "--x"]}
JOB = {"metadata": {"name": "digits-opt-r1", "uid": "job-1", "labels": {"app.kubernetes.io/component": "optimizer",
                                                                         "modelship.io/revision": "r1"}},
       "spec": {"template": {"spec": {"containers": [TEMPLATE]}}},
       "status": {"conditions": [{"type": "Complete", "status": "True"}]}}  # fmt: skip


def pod(message: str, finished: str, owner: str | None = "job-1", **container: Any) -> dict[str, Any]:
    refs = [{"kind": "Job", "uid": owner, "controller": True}] if owner else []
    return {
        "metadata": {"name": f"p-{finished}", "ownerReferences": refs},
        "spec": {"containers": [{**TEMPLATE, **container}]},
        "status": {"phase": "Succeeded", "containerStatuses": [
            {"name": container.get("name", "optimize"),
             "state": {"terminated": {"exitCode": 0, "message": message, "finishedAt": finished}}}]},
    }  # fmt: skip


def test_only_pods_the_job_controls_and_that_run_its_template_are_read() -> None:
    honest = pod("honest", "2026-01-01T00:00:01Z")
    forged = [
        pod("labels only", "2026-01-01T00:00:09Z", owner=None),
        pod("another job's", "2026-01-01T00:00:09Z", owner="job-2"),
        pod("forged controller ref, other image", "2026-01-01T00:00:09Z", image="attacker/evil:1"),
        pod("forged controller ref, other args", "2026-01-01T00:00:09Z", args=["sh", "-c", "echo forged"]),
        pod("a container the template does not have", "2026-01-01T00:00:09Z", name="sidecar"),
    ]
    assert runs_template(honest, JOB)
    assert not any(runs_template(p, JOB) for p in forged[:4])
    observed = job_observation(JOB, [honest, *forged])
    assert observed.termination_message == "honest"
    assert observed.foreign_pods == ("p-2026-01-01T00:00:09Z",) * 3  # the ones that claim the Job as controller
    counted_forged_only = job_observation(JOB, forged)
    assert counted_forged_only.termination_message is None and counted_forged_only.foreign_pods


def test_only_images_of_the_spec_repository_by_digest() -> None:
    repo = "registry.local:5000/models/digits"
    assert in_repository(f"{repo}@{DIGEST}", repo)
    for image in (f"{repo}:latest", f"{repo}-evil@{DIGEST}", f"evil.example/x@{DIGEST}", f"{repo}@sha256:abc",
                  f"{repo}/sub@{DIGEST}", f"{repo}@{DIGEST}\n", f"{repo.upper()}@{DIGEST}"):  # fmt: skip
        assert not in_repository(image, repo), image
    outside = json.dumps({"ok": True, "image": f"evil.example/x@{DIGEST}", "digest": DIGEST})
    rev = ctx(make_md()).revision
    c = ctx(make_md(), Observed(jobs=[job("build", rev, JobState.SUCCEEDED, msg=outside)]))
    out = build(c, PASSED, Known(), None)
    assert not out.built and out.image is None
    assert out.effects.failure is not None and out.effects.failure.reason == Reason.IMAGE_OUTSIDE_REPOSITORY
    assert "evil.example/x" in out.effects.failure.message


def test_a_known_image_outside_the_repository_is_not_served() -> None:
    """An image recorded for the revision (status, cache) that is not in the repository is rebuilt, not served."""
    c = ctx(make_md())
    forged = ImageStatus(revision=c.revision, reference=f"evil.example/x@{DIGEST}")
    out = build(c, PASSED, Known(image=forged), result())  # the shipped artifact the build Job hands over
    assert out.image != forged.reference and out.effects.create  # a build Job instead
    ok = build(c, PASSED, Known(image=ImageStatus(revision=c.revision, reference=IMAGE)), None)
    assert ok.built and ok.image == IMAGE


# ---- item 4: the gate verdict is the operator's ----------------------------------------------------------


def optimization(**changes: Any) -> Optimization:
    doc = copy.deepcopy(valid_doc()["spec"]["optimization"])
    doc.update(changes)
    return Optimization.model_validate(doc)


def report(**kw: Any) -> Reported:
    base: dict[str, Any] = dict(metric="accuracy", baseline=0.98, value=0.975, drop=0.98 - 0.975, gate="Passed",
                                decision="Optimized", candidate="prune+int8")  # fmt: skip
    base.update(kw)
    return Reported(**base)


def test_verify_lower_is_better_and_relative_drops() -> None:
    mse = optimization(metric={"type": "mse"}, gate={"maxDrop": 0.1, "dropType": "relative"})
    # mse 0.20 -> 0.21 is 5% worse: passes a 10% relative gate
    assert verify(mse, report(metric="mse", baseline=0.2, value=0.21, drop=0.05)) is None
    # 0.20 -> 0.25 is 25% worse: a "Passed" is refused
    refused = verify(mse, report(metric="mse", baseline=0.2, value=0.25, drop=0.25))
    assert refused is not None and "drop 0.25 > maxDrop 0.1 (relative)" in refused
    # an improvement is a negative drop
    assert verify(mse, report(metric="mse", baseline=0.2, value=0.1, drop=-0.5)) is None


def test_verify_auto_candidates_are_the_searchs_own() -> None:
    auto = optimization(strategy="Auto", steps=[])
    names = candidate_names(auto)
    assert {"dynamic", "int8", "prune50+int8"} <= names  # calibration data, no fine-tuning data
    assert "prune80+int8" not in names and "qat" not in names
    assert verify(auto, report(candidate="int8")) is None
    assert "not one the automatic search tries" in (verify(auto, report(candidate="my-own-model")) or "")
    assert "does not allow" in (verify(auto, report(gate="Failed", decision="BestPassing", candidate="int8")) or "")


def test_verify_lets_honest_reports_through() -> None:
    opt = optimization()
    assert verify(opt, report()) is None
    assert verify(opt, report(gate="Failed", decision="Blocked", value=0.95, drop=0.98 - 0.95)) is None
    assert verify(opt, report(gate="Failed", decision="Blocked", value=None, drop=None, candidate=None)) is None
    disabled = optimization(enabled=False)
    assert verify(disabled, report(gate="Skipped", decision="Baseline", candidate="baseline")) is None
    assert controlled_by({"metadata": {"ownerReferences": [owned_by(UID)]}}, UID)


def test_a_job_finished_by_a_foreign_pod_is_refused_at_once() -> None:
    """No pod-status grace when the Job counted a pod that does not run its template: refused, reason ForeignPod."""
    from modelship.controller.stages.optimize import optimize

    rev = ctx(make_md()).revision
    done = job("optimizer", rev, JobState.SUCCEEDED, msg=None, finished_at="2026-11-26T11:59:59Z",
               foreign_pods=("forged",))  # fmt: skip
    out = optimize(ctx(make_md(), Observed(jobs=[done])), Known())
    assert out.result is None and out.effects.failure is not None
    assert out.effects.failure.reason == Reason.FOREIGN_POD and "forged" in out.effects.failure.message


# ---- item 3: a revision cache tenants cannot forge, bounded and pruned ---------------------------------------


def _entry(i: int, at: str, pad: int = 0) -> str:
    return json.dumps({"image": IMAGE, "at": at, "pad": "x" * pad})


def test_the_cache_is_bounded_in_entries_and_evicts_the_least_recently_used() -> None:
    from modelship.controller import revcache

    data: dict[str, str] = {}
    for i in range(100):  # fill it far past the bound, one write at a time, as the operator does
        patch = revcache.put(data, f"r{i:03d}", _entry(i, f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"),
                             max_entries=10, max_bytes=1 << 20)  # fmt: skip
        for key, value in patch.items():
            if value is None:
                del data[key]
            else:
                data[key] = value
        assert len(data) <= 10
    assert sorted(data) == [f"r{i:03d}" for i in range(90, 100)]  # the ten most recently used
    # reusing an old entry moves it forward: the next eviction takes another one
    patch = revcache.put(data, "r090", _entry(90, "2026-01-02T00:00:00Z"), max_entries=10, max_bytes=1 << 20)
    assert patch == {"r090": _entry(90, "2026-01-02T00:00:00Z")}
    patch = revcache.put(data | patch, "r100", _entry(100, "2026-01-02T00:00:01Z"), max_entries=10,
                         max_bytes=1 << 20)  # fmt: skip
    assert patch["r091"] is None and "r090" not in patch


def test_the_cache_is_bounded_in_bytes_never_near_a_mebibyte() -> None:
    from modelship.controller import revcache

    data: dict[str, str] = {}
    big = 40_000
    for i in range(60):  # 60 x 40 kB would be 2.4 MB: a ConfigMap over 1 MiB fails every write
        patch = revcache.put(data, f"r{i:02d}", _entry(i, f"2026-01-01T00:00:{i:02d}Z", pad=big),
                             max_entries=1000, max_bytes=256 * 1024)  # fmt: skip
        data = {k: v for k, v in (data | patch).items() if v is not None}
        assert sum(len(k) + len(v) for k, v in data.items()) <= 256 * 1024
    assert len(data) == 6 and "r59" in data
    # one entry larger than the whole cache is not cached at all
    assert revcache.put(data, "huge", _entry(0, "2026-01-03T00:00:00Z", pad=300_000), max_entries=10,
                        max_bytes=256 * 1024) == {}  # fmt: skip


def test_the_cache_lives_in_the_operators_namespace_keyed_by_tenant_namespace() -> None:
    from modelship.config import OperatorConfig
    from modelship.controller.kube import PreconditionFailed
    from modelship.controller.revisions import RevisionCaches

    class CacheKube:
        def __init__(self) -> None:
            self.objects: dict[tuple[str, str], dict[str, Any]] = {}
            self.conflict_once = True
            self.gets: list[tuple[str, str]] = []

        def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
            self.gets.append((namespace, name))
            return copy.deepcopy(self.objects.get((namespace, name)))

        def write_configmap(self, namespace: str, name: str, labels: dict[str, str], data: dict[str, Any],
                            rv: str | None) -> dict[str, Any]:  # fmt: skip
            if self.conflict_once:  # another writer got there first
                self.conflict_once = False
                self.objects[(namespace, name)] = {"metadata": {"resourceVersion": "5"}, "data": {"rx": "{}"}}
                raise PreconditionFailed("changed")
            cur = self.objects.get((namespace, name))
            assert (cur["metadata"]["resourceVersion"] if cur else None) == rv
            merged = {k: v for k, v in ({**(cur or {}).get("data", {}), **data}).items() if v is not None}
            obj = {"metadata": {"name": name, "labels": labels, "resourceVersion": str(int(rv or 0) + 1)},
                   "data": merged}  # fmt: skip
            self.objects[(namespace, name)] = obj
            return obj

    kube = CacheKube()
    caches = RevisionCaches(kube, OperatorConfig(operator_namespace="modelship-system"))  # type: ignore[arg-type]
    assert caches.get("team-a", "r1") is None
    caches.put("team-a", "r1", _entry(1, "2026-01-01T00:00:00Z"))
    assert set(kube.objects) == {("modelship-system", "modelship-revisions-team-a")}
    stored = kube.objects[("modelship-system", "modelship-revisions-team-a")]
    assert stored["metadata"]["labels"]["modelship.io/revision-cache-of"] == "team-a"
    assert set(stored["data"]) == {"rx", "r1"}  # merged into the other writer's version, not over it
    assert caches.get("team-a", "r1") is not None and caches.get("team-b", "r1") is None  # never across tenants
    reads = len(kube.gets)
    caches.get("team-a", "r1")
    assert len(kube.gets) == reads  # kept in memory: the operator is the only writer
    off = RevisionCaches(kube, OperatorConfig())  # type: ignore[arg-type]
    assert off.get("team-a", "r1") is None  # no operator namespace, no cache


# ---- item 9: namespaces the platform excludes --------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["kube-system", "modelship-system"])
def test_an_excluded_namespace_is_stalled_and_nothing_is_created(namespace: str) -> None:
    from modelship.config import OperatorConfig

    store = Store()
    body = md_body()
    body["metadata"]["namespace"] = namespace
    store.put("ModelDeployment", body)
    kube = ForeignKube(store, {})
    config = OperatorConfig(operator_namespace="modelship-system")
    assert config.excluded(namespace) and not config.excluded("team-a")
    Reconciler(kube, store, config).reconcile(namespace, "digits")  # type: ignore[arg-type]
    assert kube.writes == []
    status = (store.get("ModelDeployment", namespace, "digits") or {})["status"]
    stalled_cond = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled_cond["status"], stalled_cond["reason"]) == ("True", "NamespaceExcluded")
    assert f"namespace {namespace} is excluded" in stalled_cond["message"]


def test_an_evicted_entry_is_not_written_back_from_status() -> None:
    """The cache is written when the build Job produced the image or an entry was reused, never again from what
    status recorded (a ModelDeployment whose entry was evicted would otherwise write it back every resync)."""
    from modelship.controller.plan import plan
    from modelship.controller.revcache import CachedRevision
    from tests.unit.test_plan import NOW, summary

    md = make_md()
    rev = ctx(md).revision
    built = json.dumps({"ok": True, "image": IMAGE, "digest": DIGEST})
    done = [job("optimizer", rev, JobState.SUCCEEDED, msg=summary()), job("build", rev, JobState.SUCCEEDED, msg=built)]
    first = plan(md, Observed(jobs=done), CONFIG, NOW)
    assert first.cache_put is not None and first.cache_put[0] == rev  # the build just produced it
    recorded = make_md(status=first.status)
    assert plan(recorded, Observed(jobs=done), CONFIG, NOW).cache_put is None  # evicted since: not written back
    from modelship.api import Summary
    from modelship.api.status import OptimizationStatus
    from modelship.controller import revcache

    result = OptimizationStatus.from_summary(Summary.from_line(summary()), revision=rev, job=None, attempts=1,
                                             cached=False)  # fmt: skip
    old = datetime(2026, 1, 1, tzinfo=UTC)
    cached: CachedRevision = revcache.parse(revcache.entry(result, None, IMAGE, old), md.spec.model.uri)
    reused = plan(make_md(), Observed(cached=cached), CONFIG, NOW)
    assert reused.cache_put is not None and reused.cache_put[0] == rev  # a reuse moves the entry's last use
    assert json.loads(reused.cache_put[1])["at"] > json.loads(revcache.entry(result, None, IMAGE, old))["at"]


def test_build_less_artifacts_only_from_the_repository_the_operator_pushed_to() -> None:
    """Build disabled: the optimization Job's report names the pushed artifact. Only
    oci://<the repository the operator gave --push-to>@sha256:<64 hex> is accepted from the Job; from the
    namespace's revision cache, a sibling ModelDeployment's push in the operator's repository for the same namespace
    too; anything else (another namespace's artifact, a tag, another registry, a malformed content digest) is
    Stalled ArtifactOutsideRepository and never served."""
    config = ARTIFACT_CONFIG  # registry.local:5000/<namespace>/<name>
    md = make_md(build=False)  # ml/digits
    good = f"oci://registry.local:5000/ml/digits@{DIGEST}"
    assert pushed_here(md, config, good) and servable(md, config, good)
    sibling = f"oci://registry.local:5000/ml/other@{DIGEST}"
    assert not pushed_here(md, config, sibling) and servable(md, config, sibling)
    for ref in (f"oci://registry.local:5000/victims/digits@{DIGEST}", "oci://registry.local:5000/ml/digits:latest",
                f"oci://evil.example/ml/digits@{DIGEST}", f"registry.local:5000/ml/digits@{DIGEST}",
                f"oci://registry.local:5000/ml/digits/x@{DIGEST}", f"{good}\n"):  # fmt: skip
        assert not servable(md, config, ref), ref
    assert not servable(md, CONFIG, good)  # no push was asked for: nothing pulled
    assert not servable(make_md(), config, good)  # a build: an image, never an artifact

    rev = ctx(md, config=config).revision
    for ref, refused in ((f"oci://registry.local:5000/victims/digits@{DIGEST}", True), (good, False)):
        done = job("optimizer", rev, JobState.SUCCEEDED, msg=summary(artifact_ref=ref))
        out = optimize(ctx(md, Observed(jobs=[done]), config=config), Known())
        failure = out.effects.failure
        assert (failure is not None and failure.reason == Reason.ARTIFACT_OUTSIDE_REPOSITORY) is refused, ref
        assert (out.result is None) is refused

    c = ctx(md, config=config)
    for ref, digest in ((f"oci://registry.local:5000/victims/digits@{DIGEST}", DIGEST), (good, "md5:abc")):
        shipped = result(artifact_ref=ref).model_copy(update={"artifact_digest": digest})
        out_b = build(c, PASSED, Known(), shipped)
        assert not out_b.built and out_b.artifact is None
        assert out_b.effects.failure is not None and out_b.effects.failure.reason == Reason.ARTIFACT_OUTSIDE_REPOSITORY
    assert build(c, PASSED, Known(), result(artifact_ref=sibling)).artifact == ServedArtifact(
        sibling, result().artifact_digest
    )
