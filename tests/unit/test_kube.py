"""The operator's door to the API server times out instead of hanging: every request has a connect and a read
timeout, tried here against a half-open server on loopback (accepts the connection, never answers)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelship import FIELD_MANAGER
from modelship.controller.kube import Kube, transient

JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns"}}
_POSTED = [{"manager": FIELD_MANAGER, "operation": "Update"}]
OWNED = {**JOB, "metadata": {**JOB["metadata"], "uid": "uid-1", "managedFields": _POSTED}}


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never sends a byte (a half-open API server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        sock.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda k: k.apply(JOB, "uid-1"),
        lambda k: k.get("batch/v1", "Job", "ns", "j"),
        lambda k: k.own_fields(OWNED),
        lambda k: k.create(JOB),
        lambda k: k.list("batch/v1", "Job", "ns", "a=b"),
        lambda k: k.delete("batch/v1", "Job", "ns", "j", "uid-1"),
        lambda k: k.patch_status("ns", "md", {"phase": "Ready"}),
        lambda k: k.write_configmap("ns", "cm", {}, {"k": "v"}, "7"),
    ],
    ids=["apply", "get", "own_fields", "create", "list", "delete", "patch_status", "write_configmap"],
)
def test_every_request_times_out_on_a_half_open_connection(silent_server: str, call: Callable[[Kube], Any]) -> None:
    conf = client.Configuration(host=silent_server)
    conf.retries = False  # one request, as the operator's work queue retries on its own
    kube = Kube(client.ApiClient(conf), timeout=(1.0, 0.3))
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call(kube)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)  # a deadline for the test itself: without timeouts the call blocks forever
    assert not worker.is_alive(), "the request hung on a half-open connection"
    (error,) = outcome
    assert error is not None and not isinstance(error, ApiException)
    assert transient(error), error  # the work queue retries it; it never stalls the resource


def test_transient_errors_are_the_api_servers_not_the_objects() -> None:
    assert transient(ApiException(status=503)) and transient(ApiException(status=429))
    assert transient(ConnectionResetError())
    assert not transient(ApiException(status=422)) and not transient(ApiException(status=403))
    assert not transient(ValueError("kaniko builds one platform per run"))
