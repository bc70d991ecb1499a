"""``modelship push`` and ``modelship pull``: model artifacts in an OCI registry.

``push`` stores a model file or SavedModel directory as an OCI artifact (ORAS conventions) and prints its
reference pinned by digest; ``pull`` fetches one by digest (every blob verified), as the serving pods' init
container does for revisions served without a build.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .access import Access
from .errors import FetchError

CREDENTIALS_HELP = (
    "directory of credential files (.dockerconfigjson, or username and password); default: $DOCKER_CONFIG or "
    "~/.docker/config.json"
)


def register(subparsers: Any) -> None:
    push = subparsers.add_parser(
        "push",
        help="store a model (file or SavedModel directory) as an OCI artifact in a registry",
        description="Push a model as an OCI artifact (an image manifest with artifactType "
        "application/vnd.modelship.model.v1, one layer; ORAS can pull it too). Prints oci://…@sha256:….",
    )
    push.add_argument("path", help="model file (.h5, .keras, .tflite) or SavedModel directory")
    push.add_argument("reference", help="oci://REGISTRY/REPOSITORY:TAG")
    push.add_argument("--format", choices=["keras", "h5", "savedmodel", "tflite"], help="model format annotation")
    _common(push)
    push.set_defaults(func=run_push)
    pull = subparsers.add_parser(
        "pull",
        help="fetch a model artifact from a registry by digest",
        description="Pull an OCI model artifact into --out (the model lands at OUT/<its name>); verifies every digest.",
    )
    pull.add_argument("reference", help="oci://REGISTRY/REPOSITORY:TAG or @sha256:…")
    pull.add_argument("--out", required=True, metavar="DIR", help="directory to pull into")
    pull.add_argument("--digest", metavar="sha256:HEX", help="content digest the pulled model must have")
    _common(pull)
    pull.set_defaults(func=run_pull)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain-http", action="store_true", help="talk to the registry over HTTP (no TLS)")
    p.add_argument("--ca-bundle", metavar="PEM", help="extra CA certificates (added to the system's)")
    p.add_argument("--credentials-dir", metavar="DIR", help=CREDENTIALS_HELP)


def _access(args: argparse.Namespace) -> Access:
    creds = Path(args.credentials_dir) if args.credentials_dir else None
    return Access(
        ca_file=Path(args.ca_bundle) if args.ca_bundle else None,
        credentials_dir=creds,
        environment=creds is None,
    )


def _endpoint(args: argparse.Namespace, reference: str, access: Access) -> Access:
    if not args.plain_http:
        return access
    from .oci import Reference

    host = Reference.parse(reference).host
    return Access(
        endpoint=f"http://{host}",
        ca_file=access.ca_file,
        credentials_dir=access.credentials_dir,
        environment=access.environment,
    )


def _pushable(path: Path) -> None:
    """Refuse what cannot be a model before the registry is asked: an empty file, a directory without
    saved_model.pb (the optimizer would refuse either only when it pulls it)."""
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise FetchError(f"{path}: not a SavedModel directory (no saved_model.pb in it)")
    elif path.is_file() and path.stat().st_size == 0:
        raise FetchError(f"{path}: the file is empty")


def _digest_arg(digest: str | None) -> None:
    if digest is not None and not (digest.startswith("sha256:") and len(digest) == 71):
        raise FetchError(f"--digest {digest}: expected sha256:<64 hex digits>")


def run_push(args: argparse.Namespace) -> int:
    from .oci import push

    access = _endpoint(args, args.reference, _access(args))
    try:
        _pushable(Path(args.path))
        pinned = push(Path(args.path), args.reference, access, model_format=args.format)
    except FetchError as exc:
        print(f"modelship push: error: {exc}", file=sys.stderr)
        return 1
    print(pinned)
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from .http import max_download_bytes
    from .oci import pull_into

    access = _endpoint(args, args.reference, _access(args))
    out = Path(args.out)
    try:
        _digest_arg(args.digest)
        out.mkdir(parents=True, exist_ok=True)
        pulled = pull_into(args.reference, out, access, digest=args.digest, max_bytes=max_download_bytes())
    except (FetchError, OSError) as exc:
        print(f"modelship pull: error: {exc}", file=sys.stderr)
        return 1
    print(f"{pulled.path} ({pulled.manifest_digest})")
    sys.stdout.flush()
    return 0
