"""The artifact's hand-off from the tenant's namespace to the build pod in the operator's build namespace.

A build pod cannot mount the tenant's artifact claim (claims are namespaced), and the tenant must gain no
credentials to anything of the platform's. So the artifact travels over the pod network, and the build trusts
nothing about it but its digest:

1. the build pod's first init container (``modelship artifact receive``) listens for ONE upload: a bearer token is
   required (the build Job's uid: the pod reads it from its own labels through the downward API, the operator from
   the Job), bytes and time are bounded, the tar is extracted member by member (regular files and directories only,
   relative paths, a bounded count and size);
2. the operator, once that pod has an address, starts an export Job in the tenant's namespace
   (``modelship artifact send``): it mounts the claim read-only and uploads the revision's output (report.json and
   the artifact it names) as a tar;
3. the receiver accepts it only if the artifact's digest is the one the operator recorded from the optimization
   Job's summary (``--digest``) and the report agrees: whatever the tenant does to the claim, the export pod or
   the network, the build builds exactly that artifact or fails (permanently: exit 1).

Exit codes, as the optimizer's: 0 done, 1 refused (retrying the same input cannot help), 75 temporary (nothing
arrived in time, the network failed).
"""

from __future__ import annotations

import hmac
import http.client
import http.server
import shutil
import tarfile
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .context import REPORT_FILE, ContextError, load_output

EXIT_OK, EXIT_REFUSED, EXIT_TEMPORARY = 0, 1, 75
UPLOAD_PATH = "/artifact"
MAX_MEMBERS = 10_000
READ_TIMEOUT_SECONDS = 30.0
"""A connection that sends nothing for this long is dropped (a silent peer cannot hold the receiver)."""
CHUNK = 1 << 20


class HandoffError(Exception):
    """The hand-off failed; ``temporary`` when a retry may succeed."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary

    @property
    def exit_code(self) -> int:
        return EXIT_TEMPORARY if self.temporary else EXIT_REFUSED


# -- receiving ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    artifact: str
    digest: str
    size: int


def safe_member(member: tarfile.TarInfo) -> PurePosixPath:
    """The member's path if it is a regular file or directory with a plain relative path; HandoffError if not."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or not path.parts or any(p in ("..", "") for p in path.parts):
        raise HandoffError(f"tar member {member.name!r}: not a plain relative path")
    if not (member.isreg() or member.isdir()):
        raise HandoffError(f"tar member {member.name!r}: only regular files and directories are accepted")
    return path


def extract(archive: Path, out: Path, max_bytes: int) -> None:
    """Extract ``archive`` into the empty directory ``out``, member by member, within ``max_bytes``."""
    total = 0
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise HandoffError(f"more than {MAX_MEMBERS} members in the upload")
                rel = safe_member(member)
                target = out.joinpath(*rel.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                total += member.size
                if total > max_bytes:
                    raise HandoffError(f"the upload unpacks to more than {max_bytes} bytes")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise HandoffError(f"tar member {member.name!r}: unreadable")
                with source, target.open("xb") as dst:
                    shutil.copyfileobj(source, dst, CHUNK)
    except (tarfile.TarError, EOFError) as exc:
        raise HandoffError(f"the upload is not a valid tar ({exc})") from None
    except FileExistsError as exc:
        raise HandoffError(f"tar member {exc.filename!r} appears twice") from None


def verify(out: Path, digest: str) -> Accepted:
    """The received output is the artifact the operator recorded: the report names it, the report's digest is
    ``digest``, and so is the file's (``build.context.load_output``)."""
    try:
        report, artifact = load_output(out)
    except ContextError as exc:
        raise HandoffError(f"the upload is not a usable optimization output: {exc}") from None
    if report.summary.artifact_digest != digest:
        raise HandoffError(
            f"the upload's artifact is {report.summary.artifact_digest}, not {digest} as the optimization Job "
            "reported: refusing to build it"
        )
    size = sum(p.stat().st_size for p in ([artifact] if artifact.is_file() else artifact.rglob("*")) if p.is_file())
    return Accepted(artifact=str(report.summary.artifact), digest=digest, size=size)


class _Server(http.server.ThreadingHTTPServer):
    """One thread per connection (a silent or slow peer holds only its own), one authenticated upload at a time."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int, settings: dict[str, Any]) -> None:
        super().__init__(("0.0.0.0", port), _Handler)
        self.settings = settings
        self.outcome: Accepted | HandoffError | None = None
        self.upload = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(READ_TIMEOUT_SECONDS)

    def log_message(self, format: str, *args: Any) -> None:
        print(f"modelship artifact receive: {self.client_address[0]} {format % args}", flush=True)

    def _reply(self, code: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_GET(self) -> None:
        self._reply(200, "waiting for the artifact") if self.path == "/healthz" else self._reply(404, "not found")

    def do_PUT(self) -> None:
        s = self.server.settings
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {s['token']}".encode()):
            self._reply(401, "a valid bearer token is required")  # ignored: keep waiting for the real upload
            return
        if self.path != UPLOAD_PATH:
            self._reply(404, f"upload to {UPLOAD_PATH}")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411, "Content-Length is required")
            return
        if length < 0 or length > s["max_bytes"]:
            self._fail(413, HandoffError(f"the upload is {length} bytes, more than {s['max_bytes']}"))
            return
        if not self.server.upload.acquire(blocking=False):
            self._reply(409, "another upload is in progress")
            return
        try:
            if self.server.outcome is not None:
                self._reply(409, "the artifact was already received")
                return
            accepted = self._receive(length)
        except HandoffError as exc:
            self._fail(503 if exc.temporary else 422, exc)
            return
        finally:
            self.server.upload.release()
        self.server.outcome = accepted
        self._reply(200, f"accepted {accepted.artifact} {accepted.digest}")

    def _fail(self, code: int, error: HandoffError) -> None:
        if not error.temporary:
            self.server.outcome = error  # an authenticated upload that is not the recorded artifact: give up
        self._reply(code, str(error))

    def _receive(self, length: int) -> Accepted:
        s = self.server.settings
        out: Path = s["out"]
        with tempfile.NamedTemporaryFile(dir=s["scratch"], prefix="upload-", suffix=".tar") as tmp:
            remaining = length
            try:
                while remaining:
                    chunk = self.rfile.read(min(CHUNK, remaining))
                    if not chunk:
                        raise HandoffError("the upload ended early", temporary=True)
                    tmp.write(chunk)
                    remaining -= len(chunk)
            except (TimeoutError, OSError) as exc:
                raise HandoffError(f"the upload stalled ({exc})", temporary=True) from None
            tmp.flush()
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            extract(Path(tmp.name), out, s["max_bytes"])
        return verify(out, s["digest"])


def receive(out: Path, *, digest: str, token: str, port: int, timeout: float, max_bytes: int) -> Accepted:
    """Serve until one authenticated upload of the recorded artifact is accepted into ``out``; HandoffError when it
    is refused (permanent) or nothing usable arrives within ``timeout`` seconds (temporary)."""
    if not token:
        raise HandoffError("no upload token (the downward API file is empty)")
    scratch = out.parent / ".upload"
    scratch.mkdir(parents=True, exist_ok=True)
    settings = {"out": out, "digest": digest, "token": token, "max_bytes": max_bytes, "scratch": scratch}
    server = _Server(port, settings)
    server.timeout = 1.0
    deadline = time.monotonic() + timeout
    print(f"modelship artifact receive: waiting on port {port} for {digest} (at most {max_bytes} bytes)", flush=True)
    try:
        while server.outcome is None:
            if time.monotonic() > deadline:
                raise HandoffError(f"no artifact arrived within {timeout:.0f} s", temporary=True)
            server.handle_request()
    finally:
        server.server_close()
        shutil.rmtree(scratch, ignore_errors=True)
    if isinstance(server.outcome, HandoffError):
        raise server.outcome
    return server.outcome


# -- sending ------------------------------------------------------------------------------------------------------


def pack(src: Path, archive: Path) -> str:
    """Tar the optimizer's output in ``src`` (its report and the artifact it names, verified) into ``archive``;
    returns the artifact's digest."""
    try:
        report, artifact = load_output(src)
    except ContextError as exc:
        raise HandoffError(str(exc)) from None
    with tarfile.open(archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(src / REPORT_FILE, arcname=REPORT_FILE, recursive=False)
        paths = [artifact] if artifact.is_file() else [artifact, *sorted(artifact.rglob("*"))]
        for path in paths:
            if path.is_symlink():
                raise HandoffError(f"{path}: a symbolic link in the artifact")
            tar.add(path, arcname=path.relative_to(src).as_posix(), recursive=False)
    return str(report.summary.artifact_digest)


def send(src: Path, url: str, *, token: str, timeout: float, scratch: Path | None = None) -> str:
    """Upload the output in ``src`` to a receiver at ``url``; returns the receiver's answer."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise HandoffError(f"{url}: expected http://HOST:PORT{UPLOAD_PATH}")
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        archive = Path(tmp) / "artifact.tar"
        digest = pack(src, archive)
        size = archive.stat().st_size
        print(f"modelship artifact send: {digest} ({size} bytes) to {parsed.hostname}:{parsed.port}", flush=True)
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=timeout)
        try:
            with archive.open("rb") as body:
                conn.request("PUT", parsed.path or UPLOAD_PATH, body=body, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/x-tar",
                    "Content-Length": str(size)})  # fmt: skip
            response = conn.getresponse()
            answer = response.read(4096).decode("utf-8", errors="replace").strip()
        except (OSError, http.client.HTTPException) as exc:
            raise HandoffError(f"upload to {parsed.hostname}:{parsed.port} failed: {exc}", temporary=True) from None
        finally:
            conn.close()
    if response.status == 200:
        return answer
    temporary = response.status >= 500 and response.status != 501
    raise HandoffError(f"the build refused the artifact ({response.status}): {answer}", temporary=temporary)


def read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise HandoffError(f"{path}: cannot read the upload token ({exc.strerror})") from None
