"""fetch: URI resolution, digests, http streaming, optional cloud extras (no TensorFlow)."""

from __future__ import annotations

import hashlib
import http.server
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelship import fetch
from modelship.sources.digest import CHUNK
from tests.support.hostile import hostile_server, s3_listing
from tests.support.servers import loopback_http


def test_file_digest_is_sha256_of_bytes(tmp_path: Path) -> None:
    p = tmp_path / "m.h5"
    p.write_bytes(b"model bytes" * 1000)
    assert fetch.sha256_path(p) == "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()


def _tree(root: Path) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 100)
    return root


def test_directory_digest_is_deterministic_and_content_addressed(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    b = _tree(tmp_path / "b")
    os.utime(b / "saved_model.pb", (1, 1))  # times do not count
    assert fetch.sha256_path(a) == fetch.sha256_path(b)
    (b / "variables" / "variables.index").write_bytes(b"indeX")
    assert fetch.sha256_path(a) != fetch.sha256_path(b)
    c = _tree(tmp_path / "c")
    (c / "variables" / "variables.index").rename(c / "variables" / "renamed.index")
    assert fetch.sha256_path(a) != fetch.sha256_path(c)
    assert fetch.size_of(a) == 5 + 5 + 100


def test_local_file_and_pvc_uris(tmp_path: Path) -> None:
    claim = tmp_path / "pvc" / "models"
    claim.mkdir(parents=True)
    (claim / "m.h5").write_bytes(b"x")
    for uri in (str(claim / "m.h5"), f"file://{claim / 'm.h5'}", "pvc://models/m.h5"):
        got = fetch.fetch(uri, pvc_root=tmp_path / "pvc")
        assert got.path.resolve() == (claim / "m.h5").resolve()
        assert not got.downloaded
        assert got.size == 1


def test_pvc_path_cannot_leave_the_claim(tmp_path: Path) -> None:
    with pytest.raises(fetch.FetchError, match="leaves the claim"):
        fetch.local_path("pvc://models/../other/secret", pvc_root=tmp_path)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(fetch.FetchError, match="does not exist"):
        fetch.fetch(str(tmp_path / "nope.h5"))


def test_digest_mismatch_fails(tmp_path: Path) -> None:
    p = tmp_path / "m.h5"
    p.write_bytes(b"abc")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(fetch.FetchError, match="digest mismatch") as exc:
        fetch.fetch(str(p), digest=wrong)
    assert wrong in str(exc.value) and fetch.sha256_path(p) in str(exc.value)
    assert fetch.fetch(str(p), digest=fetch.sha256_path(p)).path == p


def static_files(root: Path) -> type[http.server.BaseHTTPRequestHandler]:
    """A quiet handler of the files under ``root``."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    with loopback_http(static_files(root)) as base:
        yield base, root


def test_http_download_streams_and_hashes(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_root
    payload = os.urandom(3 * CHUNK + 123)
    (root / "model.tflite").write_bytes(payload)
    got = fetch.fetch(f"{base}/model.tflite", tmp_path / "dl")
    assert got.downloaded and got.path.read_bytes() == payload
    assert got.digest == "sha256:" + hashlib.sha256(payload).hexdigest() == fetch.sha256_path(got.path)
    assert got.size == len(payload)


def test_http_error_is_readable(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = http_root
    with pytest.raises(fetch.FetchError, match="HTTP 404"):
        fetch.fetch(f"{base}/missing.h5", tmp_path / "dl")


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(fetch.FetchError, match="unsupported URI scheme"):
        fetch.fetch("ftp://host/model.h5", tmp_path)


def test_gs_is_refused_with_the_interoperable_alternative(tmp_path: Path) -> None:
    with pytest.raises(fetch.FetchError, match=r"storage\.googleapis\.com"):
        fetch.fetch("gs://bucket/model.h5", tmp_path)


# ------------------------------------------------------------------------------------------ hostile servers


@pytest.fixture
def hostile() -> Iterator[tuple[str, dict[str, tuple[int, bytes]]]]:
    """A loopback server answering every GET with whatever the test put in ``routes`` (path -> (status, body))."""
    with hostile_server() as server:
        yield server.url, server.routes


@pytest.mark.parametrize(
    "key", ["model/../../escaped", "model//abs", "model/./x", "model/a/../../../etc/passwd", "model/a\\..\\b"]
)
def test_s3_prefix_keys_cannot_leave_the_download_dir(
    hostile: tuple[str, dict[str, tuple[int, bytes]]], tmp_path: Path, key: str
) -> None:
    """A listing with empty, '.' or '..' segments is refused before any object is written (issue 14 item 8)."""
    base, routes = hostile
    routes["/bucket/"] = (200, s3_listing("model/saved_model.pb", key))
    routes["/bucket/model/saved_model.pb"] = (200, b"x")
    routes[f"/bucket/{key}"] = (200, b"pwned")
    dest = tmp_path / "dl" / "deeper"
    with pytest.raises(fetch.FetchError, match="refusing object key") as exc:
        fetch.fetch("s3://bucket/model", dest, access=fetch.Access(endpoint=base))
    assert not exc.value.temporary
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"pwned"]


def test_oci_layer_titles_and_archive_members_cannot_escape(tmp_path: Path) -> None:
    from modelship.sources import paths

    for bad in ("../x", "/etc/passwd", "a//b", "", "a/./b", "a\x00b"):
        with pytest.raises(fetch.FetchError, match="refusing"):
            paths.safe_relative(bad, what="layer title")
    import io
    import tarfile

    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../outside")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(fetch.FetchError, match="leave the download directory"):
        paths.extract_tar_gz(archive, tmp_path / "out", max_bytes=1 << 20)
    assert not (tmp_path / "outside").exists()
    link = tmp_path / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tar:
        info = tarfile.TarInfo("model")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(info)
    with pytest.raises(fetch.FetchError, match="not a regular file"):
        paths.extract_tar_gz(link, tmp_path / "out2", max_bytes=1 << 20)


def test_directory_archives_are_deterministic(tmp_path: Path) -> None:
    from modelship.sources import paths

    a = _tree(tmp_path / "a")
    b = _tree(tmp_path / "b")
    os.utime(b / "saved_model.pb", (1, 1))
    assert paths.tar_gz_tree(a, tmp_path / "a.tgz") == paths.tar_gz_tree(b, tmp_path / "b.tgz")
    assert (tmp_path / "a.tgz").read_bytes() == (tmp_path / "b.tgz").read_bytes()
    paths.extract_tar_gz(tmp_path / "a.tgz", tmp_path / "back", max_bytes=1 << 20)
    assert fetch.sha256_path(tmp_path / "back") == fetch.sha256_path(a)


def test_server_that_never_answers_times_out_as_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from modelship.sources import http as shttp

    monkeypatch.setattr(shttp, "READ_TIMEOUT_SECONDS", 0.3)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        port = silent.getsockname()[1]
        with pytest.raises(fetch.FetchError, match="timed out") as exc:
            fetch.fetch(f"http://127.0.0.1:{port}/model.h5", tmp_path)
        assert exc.value.temporary
    finally:
        silent.close()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(fetch.FetchError, match="connection refused") as refused:
        fetch.fetch(f"http://127.0.0.1:{port}/model.h5", tmp_path)
    assert refused.value.temporary


def test_http_status_classification(hostile: tuple[str, dict[str, tuple[int, bytes]]], tmp_path: Path) -> None:
    base, routes = hostile
    routes["/denied.h5"] = (403, b"")
    routes["/busy.h5"] = (503, b"")
    with pytest.raises(fetch.FetchError, match="access denied") as denied:
        fetch.fetch(f"{base}/denied.h5", tmp_path)
    assert not denied.value.temporary
    with pytest.raises(fetch.FetchError, match="HTTP 503") as busy:
        fetch.fetch(f"{base}/busy.h5", tmp_path)
    assert busy.value.temporary


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelship-test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "ca.crt", tmp_path / "ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_a_source_ca_is_added_to_the_system_trust_store(http_root: tuple[str, Path], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    ctx = fetch.Access(ca_file=cert).ssl_context()
    assert ctx.cert_store_stats()["x509_ca"] == system + 1  # added, not replacing the system's
    _, root = http_root
    (root / "model.tflite").write_bytes(b"TFL3" * 10)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with loopback_http(static_files(root), tls) as base:
        url = f"{base}/model.tflite"
        assert url.startswith("https://")
        with pytest.raises(fetch.FetchError, match="certificate not trusted") as untrusted:
            fetch.fetch(url, tmp_path / "a", access=fetch.Access())
        assert not untrusted.value.temporary
        got = fetch.fetch(url, tmp_path / "b", access=fetch.Access(ca_file=cert))
        assert got.path.read_bytes() == b"TFL3" * 10


def test_credentials_come_from_files_per_source(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d, secret in ((a, "first"), (b, "second")):
        d.mkdir()
        (d / "AWS_SECRET_ACCESS_KEY").write_text(secret + "\n")
    env = {"AWS_SECRET_ACCESS_KEY": "from-env"}
    assert fetch.Access(credentials_dir=a, env=env).secret("AWS_SECRET_ACCESS_KEY") == "first"
    assert fetch.Access(credentials_dir=b, env=env).secret("AWS_SECRET_ACCESS_KEY") == "second"
    assert fetch.Access(credentials_dir=tmp_path, env=env).secret("AWS_SECRET_ACCESS_KEY") is None  # no env in Pods
    assert fetch.Access(environment=True, env=env).secret("AWS_SECRET_ACCESS_KEY") == "from-env"  # the CLI


def test_sigv4_matches_the_published_examples() -> None:
    """The S3 SigV4 examples of AWS's documentation (GET object with Range; ListObjects)."""
    import datetime as dt

    from modelship.sources import s3

    keys = s3.Keys("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    when = dt.datetime(2013, 5, 24, tzinfo=dt.UTC)
    host = "examplebucket.s3.amazonaws.com"
    get = s3.sign("GET", host, "/test.txt", {}, {"Range": "bytes=0-9"}, s3.EMPTY_SHA256, keys, "us-east-1", when)
    assert get["Authorization"].endswith("Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    assert "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date" in get["Authorization"]
    lst = s3.sign("GET", host, "/", {"max-keys": "2", "prefix": "J"}, {}, s3.EMPTY_SHA256, keys, "us-east-1", when)
    assert lst["Authorization"].endswith("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")


def test_errors_name_the_spec_field(tmp_path: Path) -> None:
    model = tmp_path / "m.h5"
    model.write_bytes(b"abc")
    sources = fetch.Sources()
    with pytest.raises(fetch.FetchError, match=r"^spec\.optimization\.data\.fineTune\.uri: .*does not exist"):
        sources.fetch("fineTune", str(tmp_path / "nope.npz"), tmp_path / "dl")
    with pytest.raises(fetch.FetchError, match=r"^spec\.model\.digest: digest mismatch"):
        sources.fetch("model", str(model), tmp_path / "dl", digest="sha256:" + "0" * 64)


def test_oci_references() -> None:
    from modelship.sources.oci import Reference

    r = Reference.parse("oci://10.213.0.1:5000/models/linear:v1")
    assert (r.host, r.repository, r.tag, r.digest) == ("10.213.0.1:5000", "models/linear", "v1", None)
    d = "sha256:" + "a" * 64
    assert Reference.parse(f"oci://reg.example.com/m@{d}").reference == d
    assert Reference.parse("oci://reg.example.com/m").tag == "latest"
    for bad in ("oci://reg", "oci://reg/UPPER:v1", "oci://reg/m@sha256:xyz", "oci://reg/m:bad tag"):
        with pytest.raises(fetch.FetchError):
            Reference.parse(bad)


def test_format_inferred_at_fetch_time_or_refused_naming_the_field(tmp_path: Path) -> None:
    """No spec.model.format: the name, then the content decide; a name that contradicts the content, or a
    directory without saved_model.pb, is an error naming spec.model.format."""
    from modelship.api.source import ModelFormat
    from modelship.optimize import modelio
    from modelship.optimize.errors import OptimizeError

    sm = _tree(tmp_path / "exported")
    assert modelio.inspect_model(sm).format == ModelFormat.SAVEDMODEL
    zipped = tmp_path / "model.h5"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a .keras archive named .h5
    with pytest.raises(OptimizeError, match=r"looks like a tf-keras \.keras archive.*set spec\.model\.format"):
        modelio.inspect_model(zipped)
    empty_dir = tmp_path / "not-a-model"
    (empty_dir / "variables").mkdir(parents=True)
    with pytest.raises(OptimizeError, match=r"saved_model\.pb is missing.*set spec\.model\.format"):
        modelio.inspect_model(empty_dir)
    assert modelio.declared_format("savedmodel") == ModelFormat.SAVEDMODEL  # an OCI artifact's annotation
    assert modelio.declared_format("onnx") is None
