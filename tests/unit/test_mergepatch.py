"""merge_patch: the status patch must remove nested keys (a stale `optimization.decision` once made a new revision
skip its optimization Job and ship the previous artifact)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from modelship.controller.mergepatch import apply_merge_patch, merge_patch

_scalars = st.one_of(st.booleans(), st.integers(), st.text(max_size=4))
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abcde"), inner, max_size=4)),
    max_leaves=12,
)
_objects = st.dictionaries(st.sampled_from("abcdef"), _json, max_size=5)


def test_nested_keys_of_the_old_revision_are_removed() -> None:
    old = {
        "revision": "r1",
        "optimization": {"revision": "r1", "decision": "Optimized", "artifactDigest": "sha256:aa", "job": "x-opt-r1"},
        "phase": "Ready",
    }
    new = {"revision": "r2", "optimization": {"revision": "r2", "attempts": 1, "job": "x-opt-r2"}, "phase": "Pending"}
    patch = merge_patch(old, new)
    assert patch == {
        "revision": "r2",
        "optimization": {"revision": "r2", "decision": None, "artifactDigest": None, "attempts": 1, "job": "x-opt-r2"},
        "phase": "Pending",
    }
    assert apply_merge_patch(old, patch) == new


def test_equal_objects_need_no_patch_and_lists_are_replaced_whole() -> None:
    obj = {"conditions": [{"type": "Ready", "status": "True"}], "image": {"digest": "sha256:bb"}}
    assert merge_patch(obj, obj) == {}
    new = {"conditions": [{"type": "Ready", "status": "False"}], "image": {"digest": "sha256:bb"}}
    assert merge_patch(obj, new) == {"conditions": [{"type": "Ready", "status": "False"}]}
    assert merge_patch({"a": {"b": 1}}, {"a": 5}) == {"a": 5}
    assert merge_patch({"a": 5}, {"a": {"b": 1}}) == {"a": {"b": 1}}


@given(_objects, _objects)
def test_applying_the_patch_gives_the_desired_object(current: dict[str, Any], desired: dict[str, Any]) -> None:
    assert apply_merge_patch(current, merge_patch(current, desired)) == desired
