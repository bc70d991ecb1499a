"""The real optimizer, run on this machine as the optimization Job would run it for a tenant's spec.

The attack suite's stage pods are kwok's: they end with the termination message and exit code a test gives them
(the suite's way to run stages, tests/integration/test_sources.py's too). For the attacks on the fetch step, that
message must be the real optimizer's: this builds the Job the operator builds for the spec (the pure
``optimize_job``), mounts what the kubelet would mount (each Secret volume read from the Job's namespace, nothing
else: a Pod cannot mount another namespace's Secret), runs ``modelship optimize`` with the container's arguments
in a fresh process whose ``/tmp`` is a directory of the test's (``TMPDIR``: the optimizer downloads under it), and
returns its exit code and summary, which the test then gives to the kwok pod of the operator's real Job.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from modelship.api import ModelDeployment, Summary
from modelship.config import OperatorConfig
from modelship.resources.defaults import with_operator_defaults
from modelship.resources.optimize_job import optimize_job
from modelship_dev import cluster as devcluster
from tests.integration.attacks.specs import TERMINATION_MESSAGE
from tests.support import servers

ARGS_TO_SANDBOX = {"--out": "out", "--pvc-root": "pvc", "--termination-log": "termination-log"}
"""Container arguments that name paths in the pod, and where they go in the sandbox."""


@dataclass(frozen=True)
class Run:
    exit_code: int
    summary: Summary
    stderr: str
    job: dict[str, Any]
    """The Job manifest the run followed (the operator's pure function on the spec)."""

    def pod_annotations(self) -> dict[str, str]:
        """What makes the kwok pod of the operator's Job end as this run ended."""
        out = {TERMINATION_MESSAGE: self.summary.to_line()}
        if self.exit_code != 0:
            out.update({devcluster.ANNOTATION_FAIL: "Error", devcluster.ANNOTATION_EXIT_CODE: str(self.exit_code)})
        return out


def optimizer_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return dict(container)


def arg(container: dict[str, Any], flag: str) -> str:
    args = list(container["args"])
    return str(args[args.index(flag) + 1])


def run_as_the_job(doc: dict[str, Any], namespace: str, admin: client.ApiClient, sandbox: Path) -> Run:
    """Run ``modelship optimize`` for ``doc`` (applied in ``namespace``) as its optimization Job's container."""
    body = copy.deepcopy(doc)
    body["metadata"]["namespace"] = namespace
    md = with_operator_defaults(ModelDeployment.from_body(body), OperatorConfig())
    job = optimize_job(md, "offline", OperatorConfig())
    container = optimizer_container(job)
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted: dict[str, str] = {}  # path in the pod -> path here
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        # the kubelet mounts the Secret of the Pod's namespace, or the Pod never starts
        found: Any = client.CoreV1Api(admin).read_namespaced_secret(secret["secretName"], namespace)
        here = sandbox / "mounts" / mount["mountPath"].lstrip("/")
        here.mkdir(parents=True)
        for key, value in (found.data or {}).items():
            (here / key).write_bytes(base64.b64decode(value))
            (here / key).chmod(secret.get("defaultMode", 0o644))
        mounted[mount["mountPath"]] = str(here)
    args = list(container["args"])
    for i, value in enumerate(args[:-1]):
        if value in ARGS_TO_SANDBOX:
            args[i + 1] = str(sandbox / ARGS_TO_SANDBOX[value])
        elif value == "--sources-json":
            sources = json.loads(args[i + 1])
            for entry in sources.values():
                if "credentialsDir" in entry:
                    entry["credentialsDir"] = mounted[entry["credentialsDir"]]
            args[i + 1] = json.dumps(sources)
    tmp = sandbox / "tmp"  # the pod's /tmp emptyDir: where the optimizer downloads
    tmp.mkdir(parents=True)
    env = {**servers.python_env(), **{e["name"]: e["value"] for e in container["env"] if "value" in e},
           "HOME": str(tmp), "TMPDIR": str(tmp), "MPLCONFIGDIR": str(tmp / "matplotlib")}  # fmt: skip
    proc = subprocess.run([servers.PYTHON, "-m", *container["command"], *args], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    summary = Summary.from_line((sandbox / "termination-log").read_text())
    return Run(exit_code=proc.returncode, summary=summary, stderr=proc.stderr, job=job)
