"""Fixtures of the Docker tier: the engine, and the runtime images (built by hack/images/build-all)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"


def _require_docker() -> bool:
    """CI must not silently skip the Docker tier."""
    return bool(os.environ.get("CI")) or os.environ.get("MODELSHIP_REQUIRE_DOCKER") == "1"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        msg = f"no Docker engine ({str(exc).splitlines()[0][:200]}): run hack/images/ensure-docker"
        if _require_docker():
            pytest.fail(msg)
        pytest.skip(msg)
    yield client
    client.close()


def ensure_image(client: Any, name: str) -> str:
    """modelship/<name>:<version> from the local engine; built with hack/images/build-all when missing."""
    import docker.errors

    tag = os.environ.get(f"MODELSHIP_{name.upper()}_IMAGE") or f"modelship/{name}:{VERSION}"
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        proc = subprocess.run(
            ["bash", str(REPO_ROOT / "hack/images/build-all"), name],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"hack/images/build-all {name} failed:\n{proc.stderr[-3000:]}")
    return tag


@pytest.fixture(scope="session")
def serving_image(docker_client: Any) -> str:
    return ensure_image(docker_client, "serving")


@pytest.fixture(scope="session")
def tf_serving_image(docker_client: Any) -> str:
    """The TensorFlow-capable serving runtime: the optimizer image (images.servingTensorflow's default)."""
    return ensure_image(docker_client, "optimizer")
