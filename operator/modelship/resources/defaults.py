"""What a ModelDeployment leaves to the operator's configuration, filled in before anything is planned.

A platform team sets a default registry and build engine once (the chart's ``build.registry`` and
``build.engine``); a tenant's spec may then leave ``spec.build.repository`` and ``spec.build.engine`` out. A spec
without a build (``build.enabled: false``) that names no repository, in an operator without an artifact repository
(``artifacts.repository``), gets the build registry's repository too when the optimization Job may push there
(``artifact_registry``): its artifact is then pushed as an OCI artifact that every serving pod pulls, instead of
being served from the ReadWriteOnce artifact claim (one node only). The
operator works on the effective spec everywhere (revision, Jobs, status), so the revision of a spec that spells
the defaults out equals the revision of one that leaves them to the operator. Changing a default gives every
ModelDeployment that relies on it a new revision: its image is rebuilt for (and pushed to) the new default.
"""

from __future__ import annotations

import re

from ..api.build import REPOSITORY_MAX_LENGTH, REPOSITORY_PATTERN, BuildEngine
from ..api.modeldeployment import ModelDeployment
from ..config import OperatorConfig
from .build_job import registry_host


class InvalidSpec(ValueError):
    """The spec is valid for the CRD but not usable with this operator's configuration; the message names the
    field."""


def default_repository(registry: str, namespace: str, name: str) -> str:
    """<registry>/<namespace>/<name>: one repository per ModelDeployment, never shared across namespaces."""
    return f"{registry}/{namespace}/{name}"


def artifact_registry(config: OperatorConfig) -> str | None:
    """The build registry, as the default home of build-less revisions' artifacts when the operator has no artifact
    repository; None when there is none, or when builds push there with a platform push Secret
    (``build.pushSecrets``): that Secret lives in the build namespace, and the optimization Job that pushes the
    artifact runs in the tenant's namespace, so it could not push."""
    if config.artifact_repository is not None or config.build_registry is None:
        return None
    if registry_host(default_repository(config.build_registry, "namespace", "name")) in config.build_push_secrets:
        return None
    return config.build_registry


def _valid_repository(repository: str) -> bool:
    return len(repository) <= REPOSITORY_MAX_LENGTH and re.fullmatch(REPOSITORY_PATTERN, repository) is not None


def with_operator_defaults(md: ModelDeployment, config: OperatorConfig) -> ModelDeployment:
    """``md`` with the build repository and engine it leaves out taken from ``config``; InvalidSpec when the
    result cannot be built. A build-less spec without a repository gets the build registry's when the artifact may
    be pushed there (``artifact_registry``; left out when that default is not a valid repository: the claim)."""
    build = md.spec.build
    namespace = md.metadata.namespace or "default"
    update: dict[str, object] = {}
    if "engine" not in build.model_fields_set and build.engine != config.build_engine:
        update["engine"] = config.build_engine
    if build.enabled and build.repository is None:
        if config.build_registry is None:
            raise InvalidSpec(
                "spec.build.repository: required when the build is enabled: this operator has no default registry "
                "(Helm value build.registry)"
            )
        repository = default_repository(config.build_registry, namespace, md.metadata.name)
        if not _valid_repository(repository):
            raise InvalidSpec(
                f"spec.build.repository: the default {repository!r} is not a valid repository "
                f"(at most {REPOSITORY_MAX_LENGTH} characters): set spec.build.repository"
            )
        update["repository"] = repository
    elif not build.enabled and build.repository is None and (registry := artifact_registry(config)) is not None:
        repository = default_repository(registry, namespace, md.metadata.name)
        if _valid_repository(repository):
            update["repository"] = repository
    if not update:
        return md
    effective = build.model_copy(update=update)
    if build.enabled and effective.engine == BuildEngine.KANIKO and len(effective.platforms) > 1:
        raise InvalidSpec(
            "spec.build.platforms: kaniko (this operator's default engine) builds one platform: set "
            "spec.build.engine: buildkit for a multi-platform image"
        )
    spec = md.spec.model_copy(update={"build": effective})
    return md.model_copy(update={"spec": spec})
