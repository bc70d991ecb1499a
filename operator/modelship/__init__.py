"""Modelship: optimize a TensorFlow/Keras model behind an accuracy gate, build it into an image, serve it."""

from collections.abc import Mapping
from typing import Any, Literal

__version__ = "0.1.0"

GROUP = "modelship.io"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ("md",)
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "modelship-operator"
HANDOVER_FIELD_MANAGER = "modelship-handover"
"""Owns a field the operator stops setting until its next owner (the HPA, for spec.replicas) writes it."""


def own_entry(entry: Mapping[str, Any], operation: Literal["Apply", "Update"]) -> bool:
    """An entry of an object's managedFields is the operator's own (FIELD_MANAGER) for ``operation``, on the object
    itself (not a subresource's, such as status)."""
    return (
        entry.get("manager") == FIELD_MANAGER and entry.get("operation") == operation and not entry.get("subresource")
    )
