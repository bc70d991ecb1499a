"""Ask the real node's cluster DNS (CoreDNS behind the ``kube-dns`` Service) from the host.

Pods resolve ``*.svc.cluster.local`` through the kubelet's clusterDNS; the host's own resolver knows nothing of
the cluster (and is left alone). The demo and the e2e tier resolve a ModelDeployment's ``status.url`` here, the
answer coming from CoreDNS exactly as a pod's would. One A query over UDP (RFC 1035), standard library only.

CLI::

    python -m modelship_dev.dns NAME [--server IP]     # prints the addresses, exit 1 if none
"""

from __future__ import annotations

import argparse
import secrets
import socket
import struct
import sys
import urllib.parse
from collections.abc import Sequence

DNS_IP = "10.96.0.10"  # the kube-dns Service (hack/node/lib.sh DNS_IP)
TYPE_A, CLASS_IN = 1, 1
RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class DnsError(RuntimeError):
    """The server answered with an error code, or not at all."""


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _skip_name(msg: bytes, i: int) -> int:
    while True:
        n = msg[i]
        if n & 0xC0 == 0xC0:  # compression pointer ends the name
            return i + 2
        if n == 0:
            return i + 1
        i += 1 + n


def query(name: str, server: str = DNS_IP, port: int = 53, timeout: float = 2.0) -> list[str]:
    """IPv4 addresses of ``name`` (a fully qualified name: no search list) from ``server``."""
    qid = secrets.randbits(16)
    question = _encode_name(name) + struct.pack("!HH", TYPE_A, CLASS_IN)
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question  # recursion desired
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, port))
        while True:
            try:
                msg, _ = s.recvfrom(4096)
            except TimeoutError:
                raise DnsError(f"no answer from {server}:{port} for {name} in {timeout}s") from None
            if len(msg) >= 12 and struct.unpack("!H", msg[:2])[0] == qid:
                break
    _, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    rcode = flags & 0xF
    if rcode:
        raise DnsError(f"{server}: {name}: {RCODES.get(rcode, rcode)}")
    i = 12
    for _ in range(qd):
        i = _skip_name(msg, i) + 4
    addresses = []
    for _ in range(an):
        i = _skip_name(msg, i)
        rtype, rclass, _ttl, rdlen = struct.unpack("!HHIH", msg[i : i + 10])
        i += 10
        if rtype == TYPE_A and rclass == CLASS_IN and rdlen == 4:
            addresses.append(socket.inet_ntoa(msg[i : i + 4]))
        i += rdlen
    return addresses


def resolve_url(url: str, server: str = DNS_IP, dns_port: int = 53) -> tuple[str, str, int]:
    """``http://name:port/path`` -> (address from the cluster DNS, host name, port)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    addresses = query(parts.hostname, server, dns_port)
    if not addresses:
        raise DnsError(f"{server}: {parts.hostname}: no A record")
    return addresses[0], parts.hostname, parts.port or 80


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m modelship_dev.dns", description=__doc__.split("\n")[0])
    ap.add_argument("name")
    ap.add_argument("--server", default=DNS_IP)
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args(argv)
    try:
        addresses = query(args.name, args.server, timeout=args.timeout)
    except (DnsError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print("\n".join(addresses))
    return 0 if addresses else 1


if __name__ == "__main__":
    raise SystemExit(main())
