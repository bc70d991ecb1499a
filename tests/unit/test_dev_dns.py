"""modelship_dev.dns: the host's client of the real node's cluster DNS, against a UDP server on loopback that
answers as CoreDNS does (compressed names, a CNAME before the A records, error codes)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from modelship_dev import dns

Responder = Callable[[bytes], list[bytes]]


@pytest.fixture
def server() -> Iterator[Callable[[Responder], tuple[str, int]]]:
    socks: list[socket.socket] = []

    def start(respond: Responder) -> tuple[str, int]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)

        def serve() -> None:
            try:
                data, peer = s.recvfrom(512)
            except OSError:
                return
            for reply in respond(data):
                s.sendto(reply, peer)

        threading.Thread(target=serve, daemon=True).start()
        return s.getsockname()  # type: ignore[no-any-return]

    yield start
    for s in socks:
        s.close()


def _answer(query: bytes, records: list[tuple[int, bytes]], rcode: int = 0, qid: int | None = None) -> bytes:
    """A response echoing the question; each record's name is a pointer to the question's name (offset 12)."""
    (orig_id,) = struct.unpack("!H", query[:2])
    question = query[12:]
    header = struct.pack("!HHHHHH", orig_id if qid is None else qid, 0x8180 | rcode, 1, len(records), 0, 0)
    body = b"".join(struct.pack("!HHHIH", 0xC00C, rtype, 1, 30, len(rdata)) + rdata for rtype, rdata in records)
    return header + question + body


def test_a_records_after_a_cname_with_compressed_names(server: Callable[[Responder], tuple[str, int]]) -> None:
    seen: list[bytes] = []

    def respond(q: bytes) -> list[bytes]:
        seen.append(q)
        cname = b"\x03svc\xc0\x0c"  # a compressed target name
        a1, a2 = socket.inet_aton("10.96.12.34"), socket.inet_aton("10.96.12.35")
        return [_answer(q, [(5, cname), (1, a1), (1, a2)])]

    host, port = server(respond)
    assert dns.query("linear.default.svc.cluster.local", host, port) == ["10.96.12.34", "10.96.12.35"]
    labels = seen[0][12:].split(b"\0")[0]
    assert labels == b"\x06linear\x07default\x03svc\x07cluster\x05local"
    assert struct.unpack("!HH", seen[0][-4:]) == (dns.TYPE_A, dns.CLASS_IN)


def test_a_reply_to_another_query_id_is_ignored(server: Callable[[Responder], tuple[str, int]]) -> None:
    def respond(q: bytes) -> list[bytes]:
        (qid,) = struct.unpack("!H", q[:2])
        stale = _answer(q, [(1, socket.inet_aton("192.0.2.1"))], qid=(qid + 1) % 65536)
        return [stale, _answer(q, [(1, socket.inet_aton("10.96.0.1"))])]

    host, port = server(respond)
    assert dns.query("kubernetes.default.svc.cluster.local", host, port) == ["10.96.0.1"]


def test_nxdomain_is_an_error_naming_the_name(server: Callable[[Responder], tuple[str, int]]) -> None:
    host, port = server(lambda q: [_answer(q, [], rcode=3)])
    with pytest.raises(dns.DnsError, match=r"nope\.default\.svc\.cluster\.local: NXDOMAIN"):
        dns.query("nope.default.svc.cluster.local", host, port)


def test_no_answer_times_out(server: Callable[[Responder], tuple[str, int]]) -> None:
    host, port = server(lambda q: [])
    with pytest.raises(dns.DnsError, match="no answer"):
        dns.query("x.cluster.local", host, port, timeout=0.2)


def test_resolve_url_keeps_the_port_and_rejects_a_missing_host(
    server: Callable[[Responder], tuple[str, int]],
) -> None:
    host, port = server(lambda q: [_answer(q, [(1, socket.inet_aton("10.96.7.7"))])])
    url = "http://m.ns.svc.cluster.local:8080/v2/models/m/infer"
    assert dns.resolve_url(url, host, port) == ("10.96.7.7", "m.ns.svc.cluster.local", 8080)
    with pytest.raises(ValueError, match="no host"):
        dns.resolve_url("/v2/models/m/infer", host, port)


def test_bad_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="bad DNS label"):
        dns.query("a..b", "127.0.0.1", 9)
