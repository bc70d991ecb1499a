"""S3 with Signature Version 4: get, list (v2), put, create bucket -- enough to fetch a model or a data set.

Our own client instead of boto3 (about 100 MB installed with botocore's data files): it sends exactly the
requests below, trusts an extra CA *in addition to* the system store (boto3's ``verify=`` replaces it), reads
credentials from mounted files, and bounds every timeout and answer like the other sources. It speaks to AWS
(virtual-hosted style) and to S3-compatible servers given an endpoint (path style: MinIO, Ceph, versitygw,
SeaweedFS, and Google Cloud Storage through its XML interoperability API with HMAC keys).

Credentials (Secret keys or, for the CLI, environment variables): ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN`` and ``AWS_REGION``. Without them requests go unsigned
(public buckets).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import http
from .access import Access
from .errors import FetchError
from .paths import inside

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str
    session_token: str | None = None


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(params.items()))


def sign(
    method: str,
    host: str,
    path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    payload_hash: str,
    keys: Keys,
    region: str,
    when: dt.datetime,
) -> dict[str, str]:
    """Headers to add for SigV4 (``Authorization``, ``x-amz-date``, ``x-amz-content-sha256``, token).

    ``path`` is the already URI-encoded absolute path; ``headers`` are the other headers to sign.
    """
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    signed.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
    if keys.session_token:
        signed["x-amz-security-token"] = keys.session_token
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            path,
            canonical_query(params),
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{keys.secret_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={keys.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}",
    }
    if keys.session_token:
        out["x-amz-security-token"] = keys.session_token
    return out


def _error_detail(body: bytes) -> str:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return ""
    code = root.findtext("Code") or ""
    message = root.findtext("Message") or ""
    return f"{code}: {message}" if code and message else code or message


class Client:
    """One S3 service (endpoint + credentials)."""

    def __init__(self, access: Access) -> None:
        self.access = access
        self.region = access.secret("AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1"
        endpoint = access.endpoint or (access.env.get("AWS_ENDPOINT_URL") if access.environment else None)
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        ak = access.secret("AWS_ACCESS_KEY_ID")
        sk = access.secret("AWS_SECRET_ACCESS_KEY")
        if bool(ak) != bool(sk):
            raise FetchError("S3 credentials need both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        self.keys = Keys(ak, sk, access.secret("AWS_SESSION_TOKEN")) if ak and sk else None

    def _url(self, bucket: str, key: str) -> tuple[str, str, str]:
        """(base URL, host header, encoded path) in path style with an endpoint, virtual-hosted on AWS."""
        encoded = "/" + _quote_path(key) if key else "/"
        if self.endpoint is not None:
            parts = urllib.parse.urlsplit(self.endpoint)
            prefix = parts.path.rstrip("/")
            path = f"{prefix}/{_quote_path(bucket)}{encoded if key else '/'}"
            return f"{parts.scheme}://{parts.netloc}", parts.netloc, path
        if DNS_BUCKET.match(bucket):
            host = f"{bucket}.s3.{self.region}.amazonaws.com"
            return f"https://{host}", host, encoded
        host = f"s3.{self.region}.amazonaws.com"
        return f"https://{host}", host, f"/{_quote_path(bucket)}{encoded if key else '/'}"

    def send(
        self,
        method: str,
        bucket: str,
        key: str = "",
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> http.Response:
        params = dict(params or {})
        base, host, path = self._url(bucket, key)
        headers: dict[str, str] = {}
        if self.keys is not None:
            payload = hashlib.sha256(body).hexdigest() if body is not None else EMPTY_SHA256
            when = dt.datetime.now(dt.UTC)
            headers.update(sign(method, host, path, params, {}, payload, self.keys, self.region, when))
        url = base + path + ("?" + canonical_query(params) if params else "")
        return http.request(method, url, self.access, headers=headers, body=body, follow_redirects=False)

    def _fail(self, response: http.Response, what: str) -> FetchError:
        return http.status_error(response, what, _error_detail, missing="no such object or bucket")

    def list(self, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under ``prefix`` (ListObjectsV2, all pages)."""
        token: str | None = None
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            response = self.send("GET", bucket, params=params)
            if response.status != 200:
                raise self._fail(response, f"s3://{bucket}/{prefix}: listing")
            try:
                root = ET.fromstring(response.read_document())
            except ET.ParseError:
                raise FetchError(f"s3://{bucket}/{prefix}: the listing is not XML") from None
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for item in root.iter(f"{ns}Contents"):
                key = item.findtext(f"{ns}Key") or ""
                size = int(item.findtext(f"{ns}Size") or "0")
                yield key, size
            if (root.findtext(f"{ns}IsTruncated") or "false").lower() != "true":
                return
            token = root.findtext(f"{ns}NextContinuationToken")
            if not token:
                return

    def get(self, bucket: str, key: str) -> http.Response:
        return self.send("GET", bucket, key)

    def download(self, bucket: str, key: str, target: Path, *, max_bytes: int) -> tuple[str, int]:
        response = self.get(bucket, key)
        if response.status != 200:
            raise self._fail(response, f"s3://{bucket}/{key}")
        return response.save(target, max_bytes=max_bytes)

    def put(self, bucket: str, key: str, data: bytes | BinaryIO) -> None:
        body = data if isinstance(data, bytes) else data.read()
        response = self.send("PUT", bucket, key, body=body)
        if response.status not in (200, 201):
            raise self._fail(response, f"s3://{bucket}/{key}: upload")
        response.close()

    def create_bucket(self, bucket: str) -> None:
        response = self.send("PUT", bucket)
        if response.status in (200, 201):
            response.close()
            return
        detail = ""
        with contextlib.suppress(FetchError):
            detail = _error_detail(response.read_document(limit=64 * 1024))
        if "BucketAlreadyOwnedByYou" in detail:
            return
        raise FetchError(f"s3://{bucket}: cannot create the bucket: HTTP {response.status} {detail}")


def _quote_path(key: str) -> str:
    return urllib.parse.quote(key, safe="-_.~/")


def split(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``."""
    parsed = urllib.parse.urlsplit(uri)
    bucket, key = parsed.netloc, urllib.parse.unquote(parsed.path).lstrip("/")
    if not bucket:
        raise FetchError(f"{uri}: expected s3://BUCKET/KEY")
    return bucket, key


def fetch(uri: str, dest: Path, access: Access, *, max_bytes: int) -> Path:
    """Download an object (to ``dest/<name>``) or every object under a prefix (to ``dest/tree``).

    A key that names an object wins; otherwise the key is a prefix (a SavedModel directory). Object names under
    the prefix become paths only through :func:`paths.inside`: empty, ``.`` or ``..`` segments are refused before
    anything is written.
    """
    bucket, key = split(uri)
    client = Client(access)
    if key and not key.endswith("/"):
        response = client.get(bucket, key)
        if response.status == 200:
            target = dest / Path(key).name
            response.save(target, max_bytes=max_bytes)
            return target
        if response.status != 404:
            raise client._fail(response, uri)
        detail = _error_detail(response.read_document(limit=64 * 1024))
        if detail.startswith("NoSuchBucket"):
            raise FetchError(f"{uri}: no such bucket {bucket!r} ({detail})")
    prefix = key.rstrip("/") + "/" if key else ""
    tree = dest / "tree"
    tree.mkdir(parents=True, exist_ok=True)
    objects = [(k, size) for k, size in client.list(bucket, prefix) if not (k.endswith("/") and size == 0)]
    if not objects:
        raise FetchError(f"{uri}: no such object, and no object under the prefix {prefix or '/'}")
    total = 0
    for name, size in objects:
        target = inside(tree, name[len(prefix) :], what=f"object key {name!r} under s3://{bucket}/{prefix}")
        total += size
        if total > max_bytes:
            raise FetchError(f"{uri}: more than the {max_bytes}-byte download limit under the prefix")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download(bucket, name, target, max_bytes=max_bytes)
    return tree
