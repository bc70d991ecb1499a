"""A small, bounded HTTP(S) client for the sources: connect and read timeouts, redirects, byte limits, and a
classification of failures into permanent and temporary.

Built on http.client (no SDK): every byte a server sends is read through here with a limit before it is decoded.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .access import Access
from .digest import CHUNK
from .errors import FetchError

CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0
MAX_REDIRECTS = 5
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""JSON and XML answers (listings, manifests, API replies) are refused beyond this."""
DEFAULT_MAX_DOWNLOAD_BYTES = 16 * 1024**3
"""A model or data set larger than this is refused (MODELSHIP_MAX_DOWNLOAD_BYTES changes it)."""
USER_AGENT = "modelship-fetch"
TEMPORARY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def max_download_bytes() -> int:
    """The download limit of this process: MODELSHIP_MAX_DOWNLOAD_BYTES, else 16 GiB."""
    value = os.environ.get("MODELSHIP_MAX_DOWNLOAD_BYTES", "")
    return int(value) if value.isdigit() else DEFAULT_MAX_DOWNLOAD_BYTES


@dataclass
class Response:
    """An open response; read it with :meth:`read_document` or :meth:`save`, then it is closed."""

    url: str
    status: int
    reason: str
    headers: Mapping[str, str]
    raw: http.client.HTTPResponse
    conn: http.client.HTTPConnection

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def close(self) -> None:
        self.raw.close()
        self.conn.close()

    def read_document(self, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
        """The whole body, refused when larger than ``limit``."""
        try:
            declared = self.header("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise FetchError(f"{redact(self.url)}: the answer is {declared} bytes, more than {limit}")
            data = self.raw.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            message = f"{redact(self.url)}: reading the answer failed: {describe(exc)}"
            raise FetchError(message, temporary=True) from None
        finally:
            self.close()
        if len(data) > limit:
            raise FetchError(f"{redact(self.url)}: the answer is larger than {limit} bytes")
        return data

    def json(self, limit: int = MAX_DOCUMENT_BYTES) -> Any:
        data = self.read_document(limit)
        try:
            return json.loads(data)
        except ValueError:
            raise FetchError(f"{redact(self.url)}: the answer is not JSON") from None

    def save(self, target: Path, *, max_bytes: int) -> tuple[str, int]:
        """Stream the body to ``target`` while hashing: (sha256:<hex>, size). Truncation is an error."""
        h = hashlib.sha256()
        size = 0
        try:
            with target.open("wb") as out:
                while chunk := self.raw.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"{redact(self.url)}: larger than the {max_bytes}-byte download limit")
                    h.update(chunk)
                    out.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{redact(self.url)}: download failed: {describe(exc)}", temporary=True) from None
        finally:
            self.close()
        declared = self.header("content-length")
        if declared is not None and declared.isdigit() and int(declared) != size:
            raise FetchError(f"{redact(self.url)}: download truncated ({size} of {declared} bytes)", temporary=True)
        return f"sha256:{h.hexdigest()}", size


class _Connection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, read_timeout: float) -> None:
        super().__init__(host, port, timeout=CONNECT_TIMEOUT_SECONDS)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.settimeout(self._read_timeout)


class _TLSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, read_timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=CONNECT_TIMEOUT_SECONDS, context=context)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.settimeout(self._read_timeout)


def redact(url: str) -> str:
    """The URL without its query string (presigned URLs carry credentials there) and user info."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); give the server's CA (caBundleRef)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def request(
    method: str,
    url: str,
    access: Access,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | BinaryIO | None = None,
    read_timeout: float | None = None,
    follow_redirects: bool = True,
) -> Response:
    """Send one request (following redirects for GET/HEAD; Authorization is dropped when the host changes).

    Network failures raise a temporary FetchError; any HTTP status is returned to the caller to judge.
    """
    if read_timeout is None:
        read_timeout = READ_TIMEOUT_SECONDS
    current = url
    sent = dict(headers or {})
    sent.setdefault("User-Agent", USER_AGENT)
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"{redact(current)}: not an http(s) URL")
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = _TLSConnection(parts.hostname, parts.port, read_timeout, access.ssl_context())
        else:
            conn = _Connection(parts.hostname, parts.port, read_timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in sent.items():
                conn.putheader(k, v)
            if body is None:
                if method in ("PUT", "POST"):
                    conn.putheader("Content-Length", "0")
                conn.endheaders()
            elif isinstance(body, bytes):
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
            else:
                conn.endheaders()
                while chunk := body.read(CHUNK):
                    conn.send(chunk)
            raw = conn.getresponse()
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise FetchError(f"{redact(current)}: {describe(exc)}") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise FetchError(f"{redact(current)}: server unreachable: {describe(exc)}", temporary=True) from None
        response = Response(
            url=current,
            status=raw.status,
            reason=raw.reason,
            headers={k.lower(): v for k, v in raw.getheaders()},
            raw=raw,
            conn=conn,
        )
        location = response.header("location")
        if follow_redirects and method in ("GET", "HEAD") and raw.status in (301, 302, 303, 307, 308) and location:
            response.close()
            nxt = urllib.parse.urljoin(current, location)
            if urllib.parse.urlsplit(nxt).netloc != parts.netloc:
                sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
            current = nxt
            continue
        return response
    raise FetchError(f"{redact(url)}: more than {MAX_REDIRECTS} redirects")


def status_error(
    response: Response, what: str, detail: Callable[[bytes], str] | None = None, *, missing: str = "not found"
) -> FetchError:
    """A FetchError for an unexpected status, classified: 401/403 refused credentials and 404 a missing object
    (permanent), 408/425/429/5xx temporary. ``detail`` extracts the server's own explanation from the error body."""
    status = response.status
    text = ""
    try:
        body = response.read_document(limit=64 * 1024)
        text = detail(body) if detail is not None else ""
    except FetchError:
        pass
    extra = f" ({' '.join(text.split())[:300]})" if text else ""
    if status in (401, 403):
        return FetchError(f"{what}: access denied, HTTP {status}{extra}: check the credentials (credentials.secretRef)")
    if status == 404:
        return FetchError(f"{what}: {missing}, HTTP 404{extra}")
    return FetchError(f"{what}: HTTP {status} {response.reason}{extra}", temporary=status in TEMPORARY_STATUS)
