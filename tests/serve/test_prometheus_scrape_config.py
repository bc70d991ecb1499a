"""README's plain-Prometheus scrape job ("With Prometheus"), loaded from the README itself and run by a REAL
Prometheus (hack/servers/build-prometheus) against real model servers: the pods are the ones the operator renders
(a stable Deployment's and a Canary candidate's shadow pod, each with its server's real ports), turned into the
target groups kubernetes_sd (role: pod) discovers for them and fed through file_sd_configs (the test build has no
kubernetes_sd). The job must keep one target per serving pod, drop an annotated stranger, give the targets the
labels the analysis' queries select on (the defaults of analysis.prometheus.*Label), and the operator's client must
then read from Prometheus the figures the pods themselves give, for the right revision."""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from modelship.api import ModelDeployment
from modelship.config import OperatorConfig, PrometheusConfig
from modelship.controller.podmetrics import fetch_pod, read_samples
from modelship.controller.prometheus import PrometheusClient
from modelship.resources.canary import canary_deployment
from modelship.resources.serving import deployment
from tests.serve.fakes import FakeModel, ServerThread
from tests.serve.test_mirror import OtherModel
from tests.serve.test_prometheus_real import counts, load, until
from tests.support.kubesd import pod_target_groups
from tests.support.servers import REPO_ROOT, prometheus
from tests.support.specs import valid_doc
from tests.unit.test_podmetrics import MAKERS
from tests.unit.test_podmetrics import pod as metrics_pod

NAMESPACE, NAME = "team-a", "digits"
MARKER = "<!-- scrape-config: loaded and run by tests/serve/test_prometheus_scrape_config.py -->"


def readme_scrape_configs() -> list[dict[str, Any]]:
    """The yaml block right after MARKER in README.md."""
    text = (REPO_ROOT / "README.md").read_text()
    assert text.count(MARKER) == 1, "README.md must hold the scrape-config marker once"
    m = re.match(r"\s*```yaml\n(.*?)\n```", text.split(MARKER, 1)[1], re.S)
    assert m, "the scrape-config marker must be followed by a ```yaml block"
    doc = yaml.safe_load(m.group(1))
    assert set(doc) == {"scrape_configs"}
    return list(doc["scrape_configs"])


def serving_md(http_port: int, metrics_port: int) -> ModelDeployment:
    doc = valid_doc(NAME)
    doc["metadata"].update(namespace=NAMESPACE, uid="0b7c6a52-5f0e-4c1e-9d1e-6f2a8f7c1d00", generation=1)
    doc["spec"]["serving"].update(
        port=http_port, metricsPort=metrics_port,
        rollout={"strategy": "Canary", "canary": {"shadow": {"percent": 50}}},
    )  # fmt: skip
    return ModelDeployment.from_body(doc)


def as_pod(dep: dict[str, Any], name: str) -> dict[str, Any]:
    template = dep["spec"]["template"]
    return {"metadata": {**template["metadata"], "name": name}, "spec": template["spec"]}


def ports(server: ServerThread) -> tuple[int, int]:
    assert server.server is not None
    return server.port, server.server.metrics_port


def targets(url: str) -> dict[str, Any] | None:
    """The targets API's data; None while Prometheus is still starting (its API answers 503 until it is ready)."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)["data"]
    except OSError:
        return None
    return data


def test_the_readme_scrape_job_gives_the_queries_their_labels(tmp_path: Path) -> None:
    (job,) = readme_scrape_configs()
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    sd_file = tmp_path / "pods.json"
    job["file_sd_configs"] = [{"files": [str(sd_file)]}]
    config = OperatorConfig()
    with ServerThread(OtherModel("m"), revision="cand") as cand:
        mirror = tmp_path / "mirror.json"
        mirror.write_text(json.dumps({"url": cand.url, "percent": 50, "candidate": "cand"}))
        with ServerThread(FakeModel("m"), revision="stable", mirror_config=str(mirror)) as stable:
            assert stable.server is not None and cand.server is not None
            stable_pod = as_pod(deployment(serving_md(*ports(stable)), "stable", config, "img@sha256:" + "1" * 64, 1),
                                "digits-5d4f8b7c9-x2x7q")  # fmt: skip
            cand_pod = as_pod(canary_deployment(serving_md(*ports(cand)), "cand", config, "img@sha256:" + "2" * 64,
                                                1, live=False), "digits-canary-6c8d9f5b4-k9lzp")  # fmt: skip
            # annotated for the generic job, not Modelship's: must be dropped
            stranger = {
                "metadata": {"name": "web-0", "labels": {"app": "web"},
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/port": str(stable.server.metrics_port)}},
                "spec": {"containers": [{"name": "web", "ports": [{"name": "metrics", "containerPort": 1}]}]},
            }  # fmt: skip
            groups = [g for p in (stable_pod, cand_pod, stranger) for g in pod_target_groups(p, NAMESPACE, "127.0.0.1")]
            assert len(groups) >= 5  # the serving pods' http and metrics ports, the stranger's
            sd_file.write_text(json.dumps(groups))
            with prometheus(tmp_path, [], scrape_seconds=1.0, scrape_configs=[job]) as prom:
                found = until(lambda: targets(prom.url),
                              lambda t: t is not None and len(t["activeTargets"]) == 2
                              and all(a["health"] == "up" for a in t["activeTargets"]))  # fmt: skip
                assert found is not None
                assert len(found["droppedTargets"]) == len(groups) - 2
                got = {a["labels"]["modelship_io_revision"]: a for a in found["activeTargets"]}
                assert set(got) == {"stable", "cand"}
                for revision, (server, p) in {"stable": (stable, stable_pod), "cand": (cand, cand_pod)}.items():
                    assert server.server is not None
                    a = got[revision]
                    assert a["labels"] == {
                        "job": "modelship-serving",
                        "instance": f"127.0.0.1:{server.server.metrics_port}",
                        "namespace": NAMESPACE,
                        "modelship_io_modeldeployment": NAME,
                        "modelship_io_revision": revision,
                        "pod": p["metadata"]["name"],
                    }
                    assert a["scrapeUrl"] == f"http://127.0.0.1:{server.server.metrics_port}/metrics"

                # the operator's client, with the chart's default label names, reads what the pods give
                load(stable, cand, 40)
                pods = [metrics_pod("stable-1", "stable", stable.server.metrics_port),
                        metrics_pod("cand-1", "cand", cand.server.metrics_port)]  # fmt: skip

                def fetch(p: dict[str, Any], port: int) -> str:
                    return fetch_pod(p, p["status"]["test-port"])

                direct = read_samples(pods, 9090, "cand", "stable", fetch, makers=MAKERS)
                assert direct.mirrored > 0 and direct.rows_agreed == 0 and direct.candidate_requests >= 10
                assert direct.stable_latency.total != direct.candidate_latency.total  # the revisions differ (40 vs 30)
                client = PrometheusClient(PrometheusConfig(url=prom.url))
                s = until(lambda: client.samples((NAMESPACE, NAME), "cand", "stable", datetime.now(UTC), None),
                          lambda s: counts(s) == counts(direct))  # fmt: skip
                assert s.error is None
                # another ModelDeployment or namespace selects nothing
                for where in ((NAMESPACE, "other"), ("team-b", NAME)):
                    none = client.samples(where, "cand", "stable", datetime.now(UTC), None)
                    assert none.candidate_requests == 0 and none.stable_latency.total == 0, where
