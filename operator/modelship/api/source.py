"""Where the model comes from: URI, format, optional digest pin, credentials by reference only."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, StringConstraints, model_validator

from .common import ApiModel, DnsSubdomain, KeyReference, LocalObjectReference
from .rules import Rule, enforce, rules_schema

URI_SCHEMES = ("pvc", "s3", "gs", "http", "https", "oci")
URI_PATTERN = r"^(pvc|s3|gs|https?|oci)://[^\s]+$"
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
    """How to authenticate to the model's storage. Secrets are only ever referenced, never inlined."""

    secret_ref: LocalObjectReference | None = None
    """Secret whose keys become the fetcher's environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...)."""
    service_account_name: DnsSubdomain | None = None
    """ServiceAccount the fetching Job runs as (IRSA / Workload Identity)."""
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] | None = None
    """Custom endpoint for S3-compatible storage (MinIO, Ceph)."""
    ca_bundle_ref: KeyReference | None = None
    """ConfigMap key holding a PEM CA bundle to trust for the endpoint."""


SOURCE_RULES: tuple[Rule, ...] = (
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
    """Location of the model: pvc://CLAIM/path, s3://bucket/key, gs://bucket/key, http(s)://..., oci://registry/repo:tag."""
    format: ModelFormat
    """File format: keras (.keras, tf-keras), h5, savedmodel (directory) or tflite (served as is)."""
    digest: Digest | None = None
    """Optional pin, sha256:<64 hex>. A model whose content does not match fails before anything else runs."""
    credentials: Credentials | None = None
    """Credentials for private storage, by reference only."""

    @model_validator(mode="after")
    def _rules(self) -> ModelSource:
        enforce(self, SOURCE_RULES)
        return self
