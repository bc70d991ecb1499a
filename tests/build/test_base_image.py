"""A base image with ONBUILD triggers is refused before anything is built (modelship.build.baseimage), checked against
real images built by the Docker engine and pushed to a real registry (Debian's docker-registry on loopback): the
config is read from the registry as the build pod reads it; the same check runs in `modelship build context`."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelship.build.baseimage import BaseImageError, image_configs, refuse_onbuild
from tests.integration.operator_harness import free_port
from tests.optimize.conftest import cli_env

from .support import write_output

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry missing (Debian's docker-registry package: hack/node/prepare)")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")  # fmt: skip
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the registry did not start"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _push(docker_client: Any, registry: str, name: str, dockerfile: str) -> str:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for filename, data in (("Dockerfile", dockerfile.encode()), ("hello.txt", b"hello\n")):
            info = tarfile.TarInfo(filename)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    tag = f"{registry}/{name}:1"
    docker_client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    for line in docker_client.images.push(tag, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(tag, force=True)
    return tag


@pytest.fixture(scope="module")
def images(docker_client: Any, registry: str) -> dict[str, str]:
    return {
        "clean": _push(docker_client, registry, "ok/base", "FROM scratch\nCOPY hello.txt /\nLABEL a=b\n"),
        "onbuild": _push(docker_client, registry, "evil/base",
                         "FROM scratch\nCOPY hello.txt /\nONBUILD RUN touch /pwned\nONBUILD COPY . /stolen\n"),
    }  # fmt: skip


def test_onbuild_triggers_are_refused(images: dict[str, str]) -> None:
    (config,) = image_configs(images["onbuild"], ["linux/amd64"], plain_http=True).values()
    assert config["config"]["OnBuild"] == ["RUN touch /pwned", "COPY . /stolen"]  # what the engine recorded
    with pytest.raises(BaseImageError) as err:
        refuse_onbuild(images["onbuild"], ["linux/amd64"], plain_http=True)
    assert "has ONBUILD triggers (RUN touch /pwned; COPY . /stolen)" in str(err.value) and not err.value.temporary
    refuse_onbuild(images["clean"], ["linux/amd64"], plain_http=True)


def test_the_build_context_step_refuses_it(images: dict[str, str], registry: str, tmp_path: Path) -> None:
    src = write_output(tmp_path / "received", b"TFL3 model")

    def context(base: str, out: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelship", "build", "context", "--from", str(src), "--out", str(tmp_path / out),
             "--base-image", base, "--check-base", "--insecure-registry", registry],
            capture_output=True, text=True, env=cli_env(), timeout=120,
        )  # fmt: skip

    refused = context(images["onbuild"], "evil")
    assert refused.returncode == 1 and "ONBUILD triggers" in refused.stderr
    assert not (tmp_path / "evil" / "Dockerfile").exists()
    ok = context(images["clean"], "ok")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "Dockerfile").read_text().startswith("# Rendered")
    gone = context(f"127.0.0.1:{free_port()}/ok/base:1", "gone")  # nothing listens: a retry may help
    assert gone.returncode == 75 and "cannot reach the registry" in gone.stderr
