"""What the integration modules share about a ModelDeployment's serving Deployment and its rollouts (the operator
on the real control plane, Jobs completed by kwok with the termination messages in ``test_operator``)."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from tests.integration.test_operator import MSG, REPO, Cluster, build_result, opt_summary

NEW_IMAGE = f"{REPO}@sha256:" + "7a" * 32
"""The image the build of a second revision reports."""


def deployment_replicas(k: Cluster, name: str = "digits") -> int | None:
    """spec.replicas of the serving Deployment ``name``; None while there is none."""
    try:
        return int(k.apps.read_namespaced_deployment(name, k.ns).spec.replicas)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def shadow_a_new_revision(k: Cluster, doc: dict[str, Any]) -> dict[str, Any]:
    """Apply a new revision of the Ready ModelDeployment ``doc`` (same model, another optimization, built as
    NEW_IMAGE) and wait until its Canary rollout is in Shadow; returns the ModelDeployment as it is then."""
    doc["spec"]["optimization"]["gate"]["maxDrop"] = 0.02
    doc["spec"]["optimization"]["job"]["podAnnotations"] = {MSG: opt_summary(candidate="prune+dynamic")}
    doc["spec"]["build"]["job"]["podAnnotations"] = {MSG: build_result(NEW_IMAGE)}
    k.apply(doc)
    return k.wait_md(lambda o: ((o.get("status") or {}).get("rollout") or {}).get("phase") == "Shadow",
                     what="rollout in Shadow", timeout=120)  # fmt: skip
