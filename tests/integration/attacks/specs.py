"""What the attacks apply: test_operator's ModelDeployment (its stage Jobs completed by kwok with the
termination messages a real optimizer and builder write, pod annotation ``modelship.io/test-termination-message``)
with one serving replica and a model URI of its own, and those messages (honest by default; an attack forges
its own)."""

from __future__ import annotations

import copy
from typing import Any

from modelship.api.modeldeployment import ModelDeployment
from modelship.config import OperatorConfig
from modelship.resources.defaults import with_operator_defaults
from modelship.resources.revision import revision
from tests.integration import test_operator as honest
from tests.integration.test_operator import DIGEST, GROUP, IMAGE, PLURAL, REPO, VERSION, build_result

TERMINATION_MESSAGE = honest.MSG
"""kwok's Stages complete a pod with this annotation's text as its container's termination message."""

__all__ = ["DIGEST", "GROUP", "IMAGE", "PLURAL", "REPO", "TERMINATION_MESSAGE", "VERSION", "build_result",
           "md_doc", "opt_summary", "revision_of"]  # fmt: skip


def opt_summary(**kw: Any) -> str:
    """The summary an honest optimizer writes for the spec below (prune + dynamic quantization, maxDrop 0.01),
    baseline 0.98 (a figure an attack changes keeps the others consistent: the drop follows the value)."""
    return honest.opt_summary(**{"baseline": 0.98, "value": 0.975, **kw})


def md_doc(name: str, *, opt_msg: str | None = None, build_msg: str | None = None, uri: str | None = None,
           **serving: Any) -> dict[str, Any]:  # fmt: skip
    doc = honest.md_doc(name, opt_msg=opt_msg or opt_summary(), build_msg=build_msg, **{"replicas": 1, **serving})
    doc["spec"]["model"]["uri"] = uri or f"https://models.example.com/{name}/cnn.h5"
    return doc


def revision_of(doc: dict[str, Any], namespace: str) -> str:
    """The revision is computable offline: the tenant knows the name of every Job the operator will create."""
    body = copy.deepcopy(doc)
    body["metadata"]["namespace"] = namespace
    return revision(with_operator_defaults(ModelDeployment.from_body(body), OperatorConfig()).spec)
