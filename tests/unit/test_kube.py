"""The operator's door to the API server times out instead of hanging: every request has a connect and a read
timeout, tried here against a half-open server on loopback (accepts the connection, never answers)."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelship import FIELD_MANAGER
from modelship.controller.kube import Kube, TooLarge, transient

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
        lambda k: k.list_events("ns", "involvedObject.uid=u", 20, 4096),
    ],
    ids=["apply", "get", "own_fields", "create", "list", "delete", "patch_status", "write_configmap", "list_events"],
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


@pytest.fixture
def events_server() -> Iterator[tuple[str, list[str], list[bytes]]]:
    """A loopback HTTP server answering each GET with the next body of a list (as an API server would a list of
    Events), recording the paths asked."""
    asked: list[str] = []
    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            asked.append(self.path)
            body = bodies.pop(0)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client stopped reading
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked, bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_list_of_events_is_read_up_to_its_bound(events_server: tuple[str, list[str], list[bytes]]) -> None:
    """An answer longer than the caller reads is refused unparsed (a tenant may write Events of 1 MB); the next
    request works (the connection dropped, not the client)."""
    url, asked, bodies = events_server
    event = {"reason": "FailedCreate", "message": "x"}
    small = json.dumps({"items": [event] * 3}).encode()
    bodies += [small, json.dumps({"items": [{**event, "message": "y" * 5000}] * 3}).encode(), small]
    conf = client.Configuration(host=url)
    conf.retries = False
    kube = Kube(client.ApiClient(conf), timeout=(5.0, 5.0))
    assert kube.list_events("ns", "involvedObject.uid=u,reason=FailedCreate", 2, 4096) == [event] * 2
    with pytest.raises(TooLarge):
        kube.list_events("ns", "involvedObject.uid=u", 2, 4096)
    assert kube.list_events("ns", "involvedObject.uid=u", 5, len(small)) == [event] * 3  # exactly the bound: read
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(asked[0]).query)
    assert urllib.parse.urlsplit(asked[0]).path == "/api/v1/namespaces/ns/events"
    assert query == {"fieldSelector": ["involvedObject.uid=u,reason=FailedCreate"], "limit": ["2"],
                     "resourceVersion": ["0"]}  # fmt: skip
