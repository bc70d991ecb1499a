"""Model sources against real servers started by the test: versitygw (S3, from the Go module proxy), Debian's
docker-registry (OCI artifacts) and an MLflow tracking server (PyPI, sqlite backend). The optimizer's real fetch
code runs (as `modelship optimize` where the summary matters); its failure summaries and exit codes then go
through the operator on the real API server, which must stall with a reason naming the field: at once for a
permanent failure, after its retries for a temporary one. The registry and MLflow also run with their own Basic
authentication (distribution's htpasswd, MLflow's basic-auth app) for the refused-credentials cases."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelship import fetch
from modelship.api import Summary
from modelship.api.report import EXIT_CODES, FailureKind
from modelship.sources import oci, s3
from modelship.sources.access import Access
from tests.integration.cluster import condition, uid_token
from tests.integration.test_operator import Cluster, k, md_doc, operator  # noqa: F401 (fixtures)
from tests.support import servers

BUCKET = "models"
OPT_JSON = json.dumps({"enabled": False})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sources")


@pytest.fixture(scope="module")
def s3_server(workdir: Path) -> Iterator[servers.S3Server]:
    with servers.versitygw(workdir / "vgw") as server:
        s3.Client(s3_access(server, workdir / "admin")).create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def registry(workdir: Path) -> Iterator[servers.Registry]:
    with servers.docker_registry(workdir / "reg") as reg:
        yield reg


@pytest.fixture(scope="module")
def mlflow(workdir: Path) -> Iterator[servers.MLflowServer]:
    with servers.mlflow_server(workdir / "mlflow") as server:
        yield server


REG_USER = {"username": "ci", "password": "s3cret-pass"}
MLFLOW_USER = ("modelship-admin", "modelship-admin-pass-0123")


@pytest.fixture(scope="module")
def auth_registry(workdir: Path) -> Iterator[servers.Registry]:
    """A registry that asks for Basic credentials (REG_USER)."""
    with servers.docker_registry(workdir / "auth-registry", user=(REG_USER["username"], REG_USER["password"])) as reg:
        yield reg


@pytest.fixture(scope="module")
def auth_mlflow(workdir: Path) -> Iterator[servers.MLflowServer]:
    """MLflow's basic-auth app (MLFLOW_USER the admin): every request needs credentials."""
    with servers.mlflow_server(workdir / "auth-mlflow", user=MLFLOW_USER) as server:
        yield server


def s3_access(server: servers.S3Server, creds: Path, *, secret: str | None = None) -> Access:
    return Access(endpoint=server.endpoint, credentials_dir=server.credentials_dir(creds, secret=secret))


def saved_model_dir(root: Path) -> Path:
    (root / "variables").mkdir(parents=True, exist_ok=True)
    (root / "saved_model.pb").write_bytes(b"graph" * 100)
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(4096))
    return root


def optimize_summary(tmp: Path, model: str, sources: dict[str, Any], *extra: str) -> tuple[int, Summary, str]:
    """Run `modelship optimize` as the Job does; return (exit code, summary, stderr)."""
    log = tmp / "termination-log"
    cmd = [servers.PYTHON, "-m", "modelship", "optimize", "--model", model, "--optimization-json", OPT_JSON,
           "--out", str(tmp / "out"), "--termination-log", str(log), "--sources-json", json.dumps(sources),
           *extra]  # fmt: skip
    proc = subprocess.run(cmd, env=servers.python_env(), capture_output=True, text=True, timeout=300)
    return proc.returncode, Summary.from_line(log.read_text()), proc.stderr


# ---------------------------------------------------------------------------------------------------- S3


def test_s3_object_and_savedmodel_prefix_with_digests(s3_server: servers.S3Server, tmp_path: Path) -> None:
    access = s3_access(s3_server, tmp_path / "creds")
    client = s3.Client(access)
    payload = os.urandom(300_000)
    client.put(BUCKET, "linear/model.h5", payload)
    tree = saved_model_dir(tmp_path / "sm")
    for rel, path in fetch.iter_files(tree):
        client.put(BUCKET, f"conv/saved_model/{rel}", path.read_bytes())
    got = fetch.fetch(f"s3://{BUCKET}/linear/model.h5", tmp_path / "a", access=access)
    assert got.path.name == "model.h5" and got.path.read_bytes() == payload
    assert got.digest == fetch.sha256_path(got.path)
    pinned = fetch.fetch(
        f"s3://{BUCKET}/conv/saved_model", tmp_path / "b", access=access, digest=fetch.sha256_path(tree)
    )
    assert pinned.path.is_dir() and (pinned.path / "variables" / "variables.index").read_bytes() == b"index"
    assert pinned.digest == fetch.sha256_path(tree)  # same content, same digest as the local directory
    with pytest.raises(fetch.FetchError, match="digest mismatch") as exc:
        fetch.fetch(f"s3://{BUCKET}/linear/model.h5", tmp_path / "c", access=access, digest="sha256:" + "0" * 64)
    assert not exc.value.temporary


def test_s3_failures_are_classified_and_name_the_field(s3_server: servers.S3Server, tmp_path: Path) -> None:
    good = s3_server.credentials_dir(tmp_path / "good")
    bad = s3_server.credentials_dir(tmp_path / "bad", secret="not-the-secret")
    s3.Client(s3_access(s3_server, tmp_path / "admin")).put(BUCKET, "f/model.h5", b"\x89HDF\r\n\x1a\n" + b"0" * 64)
    cases = {
        "missing": (f"s3://{BUCKET}/f/nope.h5", {"endpoint": s3_server.endpoint, "credentialsDir": str(good)}),
        "credentials": (f"s3://{BUCKET}/f/model.h5", {"endpoint": s3_server.endpoint, "credentialsDir": str(bad)}),
        "no bucket": ("s3://nobucket/f/model.h5", {"endpoint": s3_server.endpoint, "credentialsDir": str(good)}),
        "unreachable": (f"s3://{BUCKET}/f/model.h5", {"endpoint": f"http://127.0.0.1:{servers.free_port()}"}),
    }
    results = {}
    for name, (uri, source) in cases.items():
        rc, summary, stderr = optimize_summary(tmp_path / name.replace(" ", "-"), uri, {"model": source})
        assert rc == EXIT_CODES[summary.failure or FailureKind.PERMANENT] and not summary.ok, stderr
        assert summary.error and summary.error.startswith("spec.model.uri: "), summary.error
        results[name] = summary
    assert "no such object" in (results["missing"].error or "")
    assert "SignatureDoesNotMatch" in (results["credentials"].error or "")
    assert "not-the-secret" not in (results["credentials"].error or "")  # never echo a credential
    assert "no such bucket" in (results["no bucket"].error or "")
    assert "unreachable" in (results["unreachable"].error or "")
    assert [results[n].failure for n in cases] == [FailureKind.PERMANENT] * 3 + [FailureKind.TEMPORARY]


@dataclass(frozen=True)
class StallCase:
    """One failure of one source, as the spec names it and the optimizer reaches it."""

    uri: str
    endpoint: str
    """credentials.endpoint in the spec, and the optimizer's endpoint."""
    credentials_dir: Path | None = None
    """The mounted Secret as the optimizer sees it."""
    digest: str | None = None
    """spec.model.digest (and the optimizer's --digest)."""
    says: str = ""
    """What the Stalled message must say besides the field."""
    field: str = "spec.model.uri"
    secret: str | None = None
    """A credential that must never appear in status."""

    @property
    def temporary(self) -> bool:
        return "unreachable" in self.says


WRONG_DIGEST = "sha256:" + "0" * 64


def _creds(where: Path, **keys: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    for key, value in keys.items():
        (where / key).write_text(value)
    return where


def _s3_case(request: pytest.FixtureRequest, what: str, tmp: Path) -> StallCase:
    server: servers.S3Server = request.getfixturevalue("s3_server")
    s3.Client(s3_access(server, tmp / "admin")).put(BUCKET, "g/model.h5", b"x")
    good = server.credentials_dir(tmp / "creds")
    if what == "missing object":
        return StallCase(f"s3://{BUCKET}/g/nope.h5", server.endpoint, good, says="no such object")
    if what == "refused credentials":
        bad = server.credentials_dir(tmp / "bad", secret="wrong-s3-secret")
        return StallCase(f"s3://{BUCKET}/g/model.h5", server.endpoint, bad, says="access denied",
                         secret="wrong-s3-secret")  # fmt: skip
    return StallCase(f"s3://{BUCKET}/g/model.h5", f"http://127.0.0.1:{servers.free_port()}", good, says="unreachable")


def _oci_case(request: pytest.FixtureRequest, what: str, tmp: Path) -> StallCase:
    if what == "refused credentials":
        reg: servers.Registry = request.getfixturevalue("auth_registry")
        model = _creds(tmp / "m", **{"model.h5": "\x89HDF"}) / "model.h5"
        pinned = oci.push(model, f"oci://{reg.host}/m/stall:v1", Access(credentials_dir=_creds(tmp / "ok", **REG_USER)))
        bad = _creds(tmp / "bad", username=REG_USER["username"], password="wrong-registry-pass")
        return StallCase(pinned, f"http://{reg.host}", bad, says="access denied", secret="wrong-registry-pass")
    reg = request.getfixturevalue("registry")
    model = _creds(tmp / "m", **{"model.h5": "\x89HDF" + os.urandom(8).hex()}) / "model.h5"
    pinned = oci.push(model, f"oci://{reg.host}/m/stall:v1", Access())
    if what == "missing object":
        return StallCase(f"oci://{reg.host}/m/stall:no-such-tag", f"http://{reg.host}", says="no such artifact")
    if what == "digest mismatch":
        return StallCase(pinned, f"http://{reg.host}", digest=WRONG_DIGEST, field="spec.model.digest",
                         says=f"the spec pins {WRONG_DIGEST}")  # fmt: skip
    down = f"127.0.0.1:{servers.free_port()}"
    return StallCase(f"oci://{down}/m/stall:v1", f"http://{down}", says="unreachable")


def _mlflow_case(request: pytest.FixtureRequest, what: str, tmp: Path) -> StallCase:
    logged = tmp / "logged"
    (logged / "data").mkdir(parents=True)
    (logged / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
    (logged / "data" / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(64))
    name = f"stall-{what.replace(' ', '-')}"
    if what == "refused credentials":
        auth: servers.MLflowServer = request.getfixturevalue("auth_mlflow")
        register(auth, name, [logged], alias="champion")
        bad = _creds(tmp / "bad", MLFLOW_TRACKING_USERNAME=MLFLOW_USER[0], MLFLOW_TRACKING_PASSWORD="wrong-ml-pass")
        return StallCase(f"models:/{name}/1", auth.url, bad, says="access denied", secret="wrong-ml-pass")
    server: servers.MLflowServer = request.getfixturevalue("mlflow")
    register(server, name, [logged], alias="champion")
    if what == "missing object":
        return StallCase(f"models:/{name}/9", server.url, says="not found")
    if what == "digest mismatch":
        return StallCase(f"models:/{name}@champion", server.url, digest=WRONG_DIGEST, field="spec.model.digest",
                         says=f"the spec pins {WRONG_DIGEST}")  # fmt: skip
    return StallCase(f"models:/{name}/1", f"http://127.0.0.1:{servers.free_port()}", says="unreachable")


STALL_CASES = {"s3": _s3_case, "oci": _oci_case, "mlflow": _mlflow_case}
SOURCE_FAILURES = [
    *(("s3", w) for w in ("missing object", "refused credentials", "unreachable")),
    *((kind, w) for kind in ("oci", "mlflow") for w in ("missing object", "refused credentials", "digest mismatch",
                                                        "unreachable")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "what"), SOURCE_FAILURES, ids=[f"{kind}-{w.replace(' ', '-')}" for kind, w in SOURCE_FAILURES]
)
def test_source_failures_stall_at_once_or_after_the_retries(
    k: Cluster,  # noqa: F811
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kind: str,
    what: str,
) -> None:
    """Each source's failures (S3 on versitygw, OCI on docker-registry, MLflow on mlflow server, the last two also
    with their own Basic authentication) as the real optimizer reports them (summary and exit code, as the Job's
    pod ends with them), through the operator on the real API server: a permanent failure (a missing object,
    refused credentials, a digest mismatch) fails the Job at its first pod by the Job's podFailurePolicy and stalls
    at once (one Job, one pod, no blind retry); a temporary one (the endpoint does not answer) is retried with
    backoff, then Stalled after the attempts (MODELSHIP_MAX_JOB_ATTEMPTS=2 here). Either way the reason names the
    field (spec.model.uri, spec.model.digest; credentials.secretRef for refused credentials) and no credential
    reaches status."""
    case = STALL_CASES[kind](request, what, tmp_path)
    source: dict[str, Any] = {"endpoint": case.endpoint}
    if case.credentials_dir is not None:
        source["credentialsDir"] = str(case.credentials_dir)
    extra = ("--digest", case.digest) if case.digest else ()
    rc, summary, stderr = optimize_summary(tmp_path, case.uri, {"model": source}, *extra)
    assert summary.failure == (FailureKind.TEMPORARY if case.temporary else FailureKind.PERMANENT), summary
    assert rc == EXIT_CODES[summary.failure], stderr
    pod = {"modelship.io/test-fail": "Error", "modelship.io/test-exit-code": str(rc)}
    doc = md_doc(opt_msg=summary.to_line(), opt_annotations=pod)
    model: dict[str, Any] = {"uri": case.uri, "credentials": {"secretRef": {"name": "model-reader"},
                                                             "endpoint": case.endpoint}}  # fmt: skip
    if case.digest:
        model["digest"] = case.digest
    doc["spec"]["model"] = model
    if case.temporary:
        doc["spec"]["optimization"]["job"]["backoffLimit"] = 0  # one pod per Job: the operator's retries only
    # the Secret exists (else no Job starts: SecretNotFound); kwok's pod does not read it, the summary says it all
    k.core.create_namespaced_secret(k.ns, {"metadata": {"name": "model-reader"}, "stringData": {"token": "unused"}})
    k.apply(doc)
    s = k.wait_condition("Stalled", "True", timeout=150)
    stalled = condition(s, "Stalled")
    assert f"{case.field}: " in stalled["message"] and case.says in stalled["message"], stalled
    assert s["status"]["lastFailure"]["stage"] == "Optimize"
    if case.secret is not None:
        assert "credentials.secretRef" in stalled["message"]
        assert case.secret not in json.dumps(s["status"])  # never echo a credential
    rev = s["status"]["revision"]
    jobs = sorted(k.jobs("optimizer"), key=lambda j: j.metadata.creation_timestamp)
    failed = [next(c for c in j.status.conditions if c.type == "Failed") for j in jobs]
    if case.temporary:
        assert stalled["reason"] == "JobFailed" and "2 attempt" in stalled["message"]
        first = f"digits-opt-{rev}-{uid_token(s)}"
        assert [j.metadata.name for j in jobs] == [first, f"{first}-2"]
        assert [c.reason for c in failed] == ["BackoffLimitExceeded"] * 2  # exit 75: no FailJob rule matched
        assert s["status"]["optimization"]["attempts"] == 2
        return
    assert stalled["reason"] == "OptimizationFailed" and "1 attempt" in stalled["message"]
    (job,) = jobs
    assert failed[0].status == "True" and failed[0].reason == "PodFailurePolicy"
    pods = k.core.list_namespaced_pod(k.ns, label_selector=f"batch.kubernetes.io/job-name={job.metadata.name}").items
    assert len(pods) == 1 and s["status"]["optimization"]["attempts"] == 1
    # the Job mounts the Secret as files for the optimizer only; no credential reaches the environment
    (c,) = job.spec.template.spec.containers
    assert not c.env_from and not any(e.value_from for e in c.env or [])
    assert any(v.secret and v.secret.secret_name == "model-reader" for v in job.spec.template.spec.volumes)


def test_each_data_source_uses_its_own_endpoint_and_secret(s3_server: servers.S3Server, tmp_path: Path) -> None:
    """Two sources, two Secrets with the same key names, two endpoints: each fetch uses its own."""
    with servers.versitygw(tmp_path / "other") as other:
        admin = s3_access(other, tmp_path / "admin-other")
        s3.Client(admin).create_bucket("data")
        s3.Client(admin).put("data", "eval.npz", b"data")
        s3.Client(s3_access(s3_server, tmp_path / "admin")).put(BUCKET, "h/model.h5", b"model")
        sources = fetch.Sources(
            roles={
                "model": s3_access(s3_server, tmp_path / "model-creds"),
                "evaluation": Access(endpoint=other.endpoint, credentials_dir=other.credentials_dir(tmp_path / "d")),
            }
        )
        assert sources.fetch("model", f"s3://{BUCKET}/h/model.h5", tmp_path / "m").path.read_bytes() == b"model"
        assert sources.fetch("evaluation", "s3://data/eval.npz", tmp_path / "e").path.read_bytes() == b"data"
        with pytest.raises(fetch.FetchError, match=r"^spec\.optimization\.data\.evaluation\.uri: .*NoSuchBucket"):
            sources.fetch("evaluation", f"s3://{BUCKET}/h/model.h5", tmp_path / "x")


# ---------------------------------------------------------------------------------------------------- OCI


def test_oci_push_and_pull_by_digest(registry: servers.Registry, tmp_path: Path) -> None:
    model = tmp_path / "model.keras"
    model.write_bytes(os.urandom(20_000))
    tree = saved_model_dir(tmp_path / "saved_model")
    cmd = [servers.PYTHON, "-m", "modelship", "push", str(model), f"oci://{registry.host}/m/k:v1", "--format", "keras"]
    proc = subprocess.run(cmd, env=servers.python_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pinned = proc.stdout.strip()
    assert pinned.startswith(f"oci://{registry.host}/m/k@sha256:")
    by_tag = fetch.fetch(f"oci://{registry.host}/m/k:v1", tmp_path / "a", access=Access())
    assert by_tag.resolved == pinned and by_tag.format_hint == "keras"
    assert by_tag.path.name == "model.keras" and by_tag.digest == fetch.sha256_path(model)
    ref_dir = oci.push(tree, f"oci://{registry.host}/m/sm:v1", Access(), model_format="savedmodel")
    assert oci.push(tree, f"oci://{registry.host}/m/sm:v2", Access()) != ref_dir  # annotations differ
    assert oci.push(tree, f"oci://{registry.host}/m/sm:v3", Access(), model_format="savedmodel") == ref_dir
    got = fetch.fetch(ref_dir, tmp_path / "b", access=Access(), digest=fetch.sha256_path(tree))
    assert got.path.name == "saved_model" and (got.path / "saved_model.pb").is_file()
    # the manifest follows the OCI artifact guidance (what ORAS writes and reads)
    manifest, _ = oci.Registry(oci.Reference.parse(ref_dir), Access()).manifest()
    assert manifest["artifactType"] == oci.ARTIFACT_TYPE and manifest["config"]["mediaType"] == oci.EMPTY_TYPE
    (layer,) = manifest["layers"]
    assert layer["annotations"][oci.TITLE] == "saved_model" and layer["annotations"][oci.UNPACK] == "true"


def test_oci_pull_command_places_a_verified_model_and_spares_what_out_holds(
    registry: servers.Registry, tmp_path: Path
) -> None:
    """`modelship pull REF --out DIR --digest D`, as the serving pods' init container runs it (run again in the same
    emptyDir: the model already there is kept), and against a user's DIR whose saved_model is their own: a stale
    digest or a taken name changes nothing in DIR (before, the mismatch deleted the user's saved_model)."""
    tree = saved_model_dir(tmp_path / "src" / "saved_model")
    pinned = oci.push(tree, f"oci://{registry.host}/m/pullcmd:v1", Access(), model_format="savedmodel")
    good = fetch.sha256_path(tree)

    def pull(out: Path, digest: str) -> subprocess.CompletedProcess[str]:
        cmd = [servers.PYTHON, "-m", "modelship", "pull", pinned, "--out", str(out), "--digest", digest]
        return subprocess.run(cmd, env=servers.python_env(), capture_output=True, text=True, timeout=120)

    models = tmp_path / "models"
    for _ in range(2):
        proc = pull(models, good)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"{models / 'saved_model'} (sha256:")
        assert [p.name for p in models.iterdir()] == ["saved_model"]
        assert fetch.sha256_path(models / "saved_model") == good
    proj = tmp_path / "proj"
    mine = saved_model_dir(proj / "saved_model")
    (mine / "saved_model.pb").write_bytes(b"the user's own")
    before = fetch.sha256_path(proj)
    for digest, said in (("sha256:" + "0" * 64, "digest mismatch"), (good, "already exists with other content")):
        proc = pull(proj, digest)
        assert proc.returncode == 1 and said in proc.stderr, proc.stderr
        assert fetch.sha256_path(proj) == before and [p.name for p in proj.iterdir()] == ["saved_model"]


def test_oci_failures(registry: servers.Registry, tmp_path: Path) -> None:
    model = tmp_path / "model.h5"
    model.write_bytes(os.urandom(10_000))
    pinned = oci.push(model, f"oci://{registry.host}/m/bad:v1", Access())
    with pytest.raises(fetch.FetchError, match="no such artifact") as missing:
        fetch.fetch(f"oci://{registry.host}/m/bad:v2", tmp_path / "a", access=Access())
    assert not missing.value.temporary
    wrong = pinned.rsplit("@", 1)[0] + "@sha256:" + "1" * 64
    with pytest.raises(fetch.FetchError, match=r"no such artifact|digest mismatch"):
        fetch.fetch(wrong, tmp_path / "b", access=Access())
    # a blob altered in the registry's storage is refused before anything uses it
    manifest, _ = oci.Registry(oci.Reference.parse(pinned), Access()).manifest()
    hexd = manifest["layers"][0]["digest"].split(":")[1]
    data = registry.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    data.write_bytes(b"X" + data.read_bytes()[1:])
    with pytest.raises(fetch.FetchError, match="layer digest mismatch") as tampered:
        fetch.fetch(pinned, tmp_path / "c", access=Access())
    assert not tampered.value.temporary
    with pytest.raises(fetch.FetchError, match="unreachable") as down:
        fetch.fetch(f"oci://127.0.0.1:{servers.free_port()}/m/bad:v1", tmp_path / "d", access=Access())
    assert down.value.temporary


def test_oci_registry_credentials(workdir: Path, tmp_path: Path) -> None:
    """A registry that asks for Basic credentials: the right ones (files, or a .dockerconfigjson) push and pull; wrong
    ones are a permanent 'access denied', never echoed."""
    import base64

    with servers.docker_registry(workdir / "auth-reg", user=("ci", "s3cret-pass")) as reg:
        model = tmp_path / "model.tflite"
        model.write_bytes(b"\0\0\0\0TFL3" + os.urandom(1000))
        good = tmp_path / "good"
        good.mkdir()
        (good / "username").write_text("ci")
        (good / "password").write_text("s3cret-pass")
        pinned = oci.push(model, f"oci://{reg.host}/m/auth:v1", Access(credentials_dir=good))
        docker = tmp_path / "docker"
        docker.mkdir()
        auth = base64.b64encode(b"ci:s3cret-pass").decode()
        (docker / ".dockerconfigjson").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        got = fetch.fetch(pinned, tmp_path / "a", access=Access(credentials_dir=docker))
        assert got.digest == fetch.sha256_path(model)
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "username").write_text("ci")
        (bad / "password").write_text("wrong-pass")
        for creds in (bad, None):
            with pytest.raises(fetch.FetchError, match=r"access denied|asks for credentials") as exc:
                fetch.fetch(pinned, tmp_path / "b", access=Access(credentials_dir=creds))
            assert not exc.value.temporary and "wrong-pass" not in str(exc.value)


# ---------------------------------------------------------------------------------------------------- MLflow


def register(mlflow: servers.MLflowServer, name: str, versions: list[Path], alias: str) -> list[str]:
    """Log each directory as a run's artifacts and register it as the next version (one client process);
    ``alias`` points at the last one."""
    code = f"""
c = mlflow.MlflowClient()
c.create_registered_model({name!r})
for local in {[str(v) for v in versions]!r}:
    with mlflow.start_run() as run:
        mlflow.log_artifacts(local, artifact_path="model")
        uri = mlflow.get_artifact_uri("model")
    mv = c.create_model_version({name!r}, uri, run_id=run.info.run_id)
    print(mv.version)
c.set_registered_model_alias({name!r}, {alias!r}, mv.version)
"""
    return [line for line in mlflow.client(code).split() if line.isdigit()]  # mlflow prints run links too


def test_mlflow_registered_versions(mlflow: servers.MLflowServer, tmp_path: Path) -> None:
    logged = []
    for i in (1, 2):  # MLflow model directories, as log_model writes them: MLmodel + the model under data/
        d = tmp_path / f"logged-{i}"
        (d / "data").mkdir(parents=True)
        (d / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
        (d / "data" / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(5000))
        logged.append(d)
    assert register(mlflow, "linear", logged, alias="champion") == ["1", "2"]
    access = Access(endpoint=mlflow.url)
    got = fetch.fetch("models:/linear@champion", tmp_path / "a", access=access)
    assert got.path.name == "model.h5" and got.path.read_bytes() == (logged[1] / "data" / "model.h5").read_bytes()
    assert got.resolved is not None and got.resolved.startswith("linear version 2 ")
    first = fetch.fetch("models:/linear/1", tmp_path / "b", access=access)
    assert first.digest != got.digest
    assert fetch.fetch("models:/linear/1", tmp_path / "c", access=access, digest=first.digest).digest == first.digest
    rc, summary, _ = optimize_summary(tmp_path / "missing", "models:/linear/9", {"model": {"endpoint": mlflow.url}})
    assert rc == 1 and summary.failure == FailureKind.PERMANENT
    assert summary.error and summary.error.startswith("spec.model.uri: ") and "not found" in summary.error
    rc, summary, _ = optimize_summary(
        tmp_path / "down", "models:/linear/1", {"model": {"endpoint": f"http://127.0.0.1:{servers.free_port()}"}}
    )
    assert rc == 75 and summary.failure == FailureKind.TEMPORARY and "unreachable" in (summary.error or "")
