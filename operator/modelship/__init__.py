"""Modelship: optimize a TensorFlow/Keras model behind an accuracy gate, build it into an image, serve it."""

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
