"""Real storage servers the source tests start and stop: versitygw (S3), Debian's docker-registry (OCI) and an
MLflow tracking server (sqlite backend), each on an address the test picks, with its data in a temporary
directory. Built or installed by hack/servers/* (cached under /var/cache/modelship); a missing one skips the test,
or fails it in CI."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MODELSHIP_CACHE", "/var/cache/modelship"))
S3_ACCESS_KEY = "modelship-test"
S3_SECRET_KEY = "modelship-test-secret-key-0123456789"


def unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (run hack/setup)", pytrace=False)
    pytest.skip(message)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def loopback_http(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A threading HTTP server on a free loopback port answering with ``handler`` (HTTPS with a server-side ``tls``
    context); yields its base URL and shuts it down (socket closed) on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls is not None else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _tool(script: str) -> str:
    """Path printed by a hack/servers script (a warm cache answers at once; a cold one builds)."""
    try:
        out = subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / "servers" / script)],
            check=True, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        unavailable(f"hack/servers/{script} failed: {getattr(exc, 'stderr', '')[-500:]}")
    return out.stdout.strip().splitlines()[-1]


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url}: no answer within {timeout} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _process(
    cmd: list[str], log: Path, ready_url: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        _wait_http(ready_url, proc, log, timeout)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    root: Path
    access_key: str = S3_ACCESS_KEY
    secret_key: str = S3_SECRET_KEY

    def credentials_dir(self, where: Path, *, secret: str | None = None) -> Path:
        """A directory laid out like the mounted Secret (one file per key)."""
        where.mkdir(parents=True, exist_ok=True)
        (where / "AWS_ACCESS_KEY_ID").write_text(self.access_key)
        (where / "AWS_SECRET_ACCESS_KEY").write_text(secret or self.secret_key)
        return where


@contextlib.contextmanager
def versitygw(workdir: Path, host: str = "127.0.0.1") -> Iterator[S3Server]:
    """versitygw with a POSIX backend in ``workdir`` (buckets are directories), root credentials S3_*."""
    binary = _tool("build-versitygw")
    root = workdir / "s3"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    endpoint = f"http://{host}:{port}"
    cmd = [binary, "--access", S3_ACCESS_KEY, "--secret", S3_SECRET_KEY, "--port", f"{host}:{port}", "--quiet",
           "--health", "/healthz", "posix", str(root)]  # fmt: skip
    with _process(cmd, workdir / "versitygw.log", f"{endpoint}/healthz"):
        yield S3Server(endpoint=endpoint, root=root)


@dataclass(frozen=True)
class Registry:
    host: str
    """host:port"""
    root: Path


def _htpasswd(path: Path, user: str, password: str) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through the system's libxcrypt (distribution's htpasswd wants bcrypt)

        path.write_text(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    return path


@contextlib.contextmanager
def docker_registry(
    workdir: Path, host: str = "127.0.0.1", *, user: tuple[str, str] | None = None
) -> Iterator[Registry]:
    """Debian's docker-registry (distribution) on plain HTTP with filesystem storage in ``workdir``; with
    ``user`` (name, password) it asks for Basic credentials (htpasswd)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        unavailable("docker-registry is not installed (hack/node/prepare installs Debian's package)")
    assert binary is not None
    port = free_port(host)
    root = workdir / "registry"
    root.mkdir(parents=True, exist_ok=True)
    config = workdir / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '{host}:{port}'}}\n"
    )
    if user is not None:
        htpasswd = _htpasswd(workdir / "htpasswd", *user)
        config.write_text(config.read_text() + f"auth: {{htpasswd: {{realm: modelship-test, path: {htpasswd}}}}}\n")
    with _process([binary, "serve", str(config)], workdir / "registry.log", f"http://{host}:{port}/v2/"):
        yield Registry(host=f"{host}:{port}", root=root)


@dataclass(frozen=True)
class MLflowServer:
    url: str
    python: str
    """The MLflow venv's python (to register models with the real client)."""
    user: tuple[str, str] | None = None
    """The admin's (name, password) of a server that asks for Basic credentials."""

    def client(self, code: str) -> str:
        """Run ``code`` with mlflow imported and the tracking URI (and the admin's credentials) set; return its
        stdout."""
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.url, "PYTHONPATH": ""}
        if self.user is not None:
            env.update(MLFLOW_TRACKING_USERNAME=self.user[0], MLFLOW_TRACKING_PASSWORD=self.user[1])
        out = subprocess.run([self.python, "-c", "import mlflow\n" + code], env=env, check=True,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        return out.stdout


@contextlib.contextmanager
def mlflow_server(
    workdir: Path, host: str = "127.0.0.1", *, user: tuple[str, str] | None = None
) -> Iterator[MLflowServer]:
    """``mlflow server`` with a sqlite backend and proxied artifacts under ``workdir``; with ``user`` (name,
    password) MLflow's own basic-auth app (``--app-name basic-auth``) runs with that admin and its user database in
    ``workdir``, and every request needs Basic credentials."""
    python = _tool("install-mlflow")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    url = f"http://{host}:{port}"
    cmd = [python, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
           "--artifacts-destination", str(workdir / "mlartifacts")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": ""}
    if user is not None:
        config = workdir / "basic_auth.ini"
        config.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{workdir / 'basic_auth.db'}\n"
            f"admin_username = {user[0]}\nadmin_password = {user[1]}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex())
        cmd += ["--app-name", "basic-auth"]
    with _process(cmd, workdir / "mlflow.log", f"{url}/health", timeout=180, env=env):
        yield MLflowServer(url=url, python=python, user=user)


def python_env() -> dict[str, str]:
    """Environment for `python -m modelship` subprocesses importing this tree."""
    return {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'operator'}:{REPO_ROOT}", "TF_USE_LEGACY_KERAS": "1"}


PYTHON = sys.executable


@dataclass(frozen=True)
class PrometheusServer:
    url: str
    scrape_seconds: float


@contextlib.contextmanager
def prometheus(
    workdir: Path,
    targets: list[tuple[str, dict[str, str]]],
    scrape_seconds: float = 1.0,
    host: str = "127.0.0.1",
    scrape_configs: list[dict[str, Any]] | None = None,
) -> Iterator[PrometheusServer]:
    """A real Prometheus (hack/servers/build-prometheus) on loopback scraping ``targets`` ((host:port, target
    labels)) every ``scrape_seconds`` from a static configuration, or running ``scrape_configs`` instead, its
    TSDB in ``workdir``."""
    import json

    binary = _tool("build-prometheus")
    static = [{"job_name": "modelship-serving", "metrics_path": "/metrics",
               "static_configs": [{"targets": [t], "labels": labels} for t, labels in targets]}]  # fmt: skip
    config = {
        "global": {"scrape_interval": f"{scrape_seconds:g}s", "scrape_timeout": f"{scrape_seconds:g}s"},
        "scrape_configs": static if scrape_configs is None else scrape_configs,
    }
    cfg = workdir / "prometheus.yml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    port = free_port(host)
    url = f"http://{host}:{port}"
    cmd = [binary, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
           f"--web.listen-address={host}:{port}", "--log.level=warn"]  # fmt: skip
    with _process(cmd, workdir / "prometheus.log", f"{url}/-/ready"):
        yield PrometheusServer(url=url, scrape_seconds=scrape_seconds)
