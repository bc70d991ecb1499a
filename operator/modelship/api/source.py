"""Where the model comes from: URI, format, optional digest pin, credentials by reference only."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, StrictBool, StringConstraints, model_validator

from .common import ApiModel, DnsSubdomain, KeyReference, LocalObjectReference
from .rules import Rule, enforce, rules_schema

URI_SCHEMES = ("pvc", "s3", "http", "https", "oci", "models")
URI_PATTERN = r"^((pvc|s3|https?|oci)://|models:/)[^\s]+$"
DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
PVC_URI_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+$"
Uri = Annotated[str, StringConstraints(pattern=URI_PATTERN, max_length=2048)]
Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]


class ModelFormat(StrEnum):
    """How the model file is stored."""

    KERAS = "keras"
    H5 = "h5"
    SAVEDMODEL = "savedmodel"
    TFLITE = "tflite"


class Credentials(ApiModel):
    """How to reach this source: endpoint, CA and credentials. Secrets are only ever referenced, never inlined."""

    secret_ref: LocalObjectReference | None = None
    """Secret mounted as read-only files into the fetching container only (never environment variables). Keys:
    s3 AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN, AWS_REGION); oci .dockerconfigjson or
    username and password; models:/ MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD;
    https token (sent as a Bearer token)."""
    service_account_name: DnsSubdomain | None = None
    """ServiceAccount the optimization Job runs as (IRSA / Workload Identity), under the platform's policy
    (policy.allowServiceAccounts). spec.model only: the Job fetches the model and every data set in one pod, so a
    data set's credentials refuse it rather than ignore it."""
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)] | None = None
    """s3: an S3-compatible endpoint (MinIO, Ceph, versitygw; https://storage.googleapis.com for Cloud Storage with
    HMAC keys); oci: the registry's base URL (http:// for a registry without TLS); models:/ the MLflow tracking
    server (required)."""
    ca_bundle_ref: KeyReference | None = None
    """ConfigMap key holding PEM CA certificates trusted for this source, in addition to the system's."""


MODEL_SUFFIXES: dict[str, ModelFormat] = {
    ".h5": ModelFormat.H5,
    ".hdf5": ModelFormat.H5,
    ".keras": ModelFormat.KERAS,
    ".tflite": ModelFormat.TFLITE,
}
SUFFIX_CEL = "(?i)\\\\.(h5|hdf5|keras|tflite)$"


def format_from_uri(uri: str) -> ModelFormat | None:
    """The format a URI's name says (model.h5, model.keras, model.tflite), or None (decided at fetch time)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1].lower()
    for suffix, fmt in MODEL_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


SOURCE_RULES: tuple[Rule, ...] = (
    Rule(
        cel="has(self.format) || !self.uri.matches('^https?://') || self.uri.matches('" + SUFFIX_CEL + "')",
        message="cannot infer the format of an http(s) download from its name: set spec.model.format "
        "(keras, h5, savedmodel or tflite)",
        check=lambda m: (
            m.format is not None or not re.match(r"^https?://", m.uri) or format_from_uri(m.uri) is not None
        ),
        field_path=".format",
    ),
    Rule(
        cel="!self.uri.startsWith('models:/') || (has(self.credentials) && has(self.credentials.endpoint))",
        message="models:/ URIs need the MLflow tracking server in credentials.endpoint",
        check=lambda m: not m.uri.startswith("models:/") or (m.credentials is not None and m.credentials.endpoint),
        field_path=".credentials",
    ),
    Rule(
        cel=f"!self.uri.startsWith('pvc://') || self.uri.matches('{PVC_URI_PATTERN}')",
        message="pvc:// URIs must be pvc://CLAIM-NAME/path/inside/the/claim",
        check=lambda m: not m.uri.startswith("pvc://") or re.match(PVC_URI_PATTERN, m.uri) is not None,
        field_path=".uri",
    ),
)


class ModelSource(ApiModel):
    """The trained model to optimize and serve."""

    model_config = ConfigDict(json_schema_extra=rules_schema(SOURCE_RULES))

    uri: Uri
    """Location of the model: pvc://CLAIM/path, s3://bucket/key (a prefix for a SavedModel directory),
    http(s)://..., oci://registry/repo:tag or @sha256:... (an artifact pushed with `modelship push`), or
    models:/NAME/VERSION or models:/NAME@ALIAS (an MLflow model registry; credentials.endpoint names the server)."""
    format: ModelFormat | None = None
    """File format: keras (.keras, tf-keras), h5, savedmodel (directory) or tflite (served as is). When omitted it
    is inferred from the name (.h5, .keras, .tflite) or, at fetch time, from the content (a directory holding
    saved_model.pb, an OCI artifact's annotation); a model it cannot tell fails naming this field."""
    digest: Digest | None = None
    """Optional pin, sha256:<64 hex>. A model whose content does not match fails before anything else runs."""
    credentials: Credentials | None = None
    """Credentials for private storage, by reference only."""
    allow_code: StrictBool = False
    """A model is code: true lets the optimization Job load a model that carries Python (Lambda layers, custom
    objects, tf-op layers beyond tensor math, SavedModel ops that call Python or touch files) and run a custom
    metric's code. The platform must allow it too (the chart's policy.allowCode). false: such a model fails its
    optimization with a message naming what it carries, before any of it runs."""

    def inferred_format(self) -> ModelFormat | None:
        """The explicit format, else the one the URI's name says (None: decided from the content)."""
        return self.format or format_from_uri(self.uri)

    @model_validator(mode="after")
    def _rules(self) -> ModelSource:
        enforce(self, SOURCE_RULES)
        return self
