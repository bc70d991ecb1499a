"""A reconcile whose status write finds its ModelDeployment gone (deleted after the reconcile read it) is over: not
an error retried with back-off. Only a 404 about the ModelDeployment itself counts, never one about a child."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from modelship.controller.stalls import deleted_meanwhile


def not_found(
    name: str, group: str = "modelship.io", kind: str = "modeldeployments", status: int = 404
) -> ApiException:
    """The API server's answer to a status patch of a ModelDeployment deleted meanwhile (recorded, 1.34)."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound",
            "message": f'{kind}.{group} "{name}" not found', "details": {"name": name, "group": group, "kind": kind},
            "code": status}  # fmt: skip
    return ApiException(status=status, reason="Not Found", body=json.dumps(body))


def test_a_404_about_the_modeldeployment_itself_is_a_deletion() -> None:
    assert deleted_meanwhile(not_found("digits"), "digits")


def test_a_404_about_anything_else_is_not() -> None:
    assert not deleted_meanwhile(not_found("other"), "digits")  # another ModelDeployment
    assert not deleted_meanwhile(not_found("digits", group="apps", kind="deployments"), "digits")  # a child
    assert not deleted_meanwhile(not_found("digits", status=409), "digits")
    for body in ("", "not json", "[]", '{"details": "x"}'):
        assert not deleted_meanwhile(ApiException(status=404, reason="Not Found", body=body), "digits")
