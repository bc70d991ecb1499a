"""Names that come from a server become local paths only through here.

A key such as ``model/../../etc/x`` or ``model//x`` from an object store, or an archive member ``../x``, must
never land outside the download directory (and never before the digest check could object). Directory layers of
OCI artifacts are deterministic tar+gzip archives: the same tree always gives the same bytes, so the same digest.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from pathlib import Path, PurePosixPath

from .digest import CHUNK, iter_files
from .errors import FetchError

MAX_PATH_BYTES = 1024


def safe_relative(name: str, *, what: str) -> PurePosixPath:
    """``name`` as a relative path with only real segments; FetchError for anything else.

    Refused: empty names, absolute paths, empty segments (``a//b``), ``.`` and ``..`` segments, backslashes, NUL
    and control characters, and names longer than MAX_PATH_BYTES.
    """
    if not name or len(name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise FetchError(f"refusing {what} {name[:80]!r}: empty or too long a name")
    if any(ord(c) < 32 or c in "\\\x7f" for c in name):
        raise FetchError(f"refusing {what} {name[:80]!r}: control character or backslash in the name")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise FetchError(f"refusing {what} {name[:80]!r}: it would leave the download directory")
    return PurePosixPath(*parts)


def inside(root: Path, name: str, *, what: str) -> Path:
    """``root / name`` after :func:`safe_relative`, checked again once resolved (symlinked parents)."""
    rel = safe_relative(name, what=what)
    target = root / rel
    resolved_root = root.resolve()
    if resolved_root not in target.resolve().parents:
        raise FetchError(f"refusing {what} {name[:80]!r}: it would leave the download directory")
    return target


class _HashingWriter:
    """Hashes what tarfile writes (the uncompressed tar) on its way to gzip."""

    def __init__(self, out: gzip.GzipFile) -> None:
        self.out = out
        self.h = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.offset += len(data)
        return self.out.write(data)

    def tell(self) -> int:
        return self.offset


def tar_gz_tree(root: Path, out: Path) -> str:
    """Write ``root``'s regular files as a deterministic tar.gz (sorted, mtime 0, uid/gid 0, modes 0644/0755);
    return ``sha256:<hex>`` of the uncompressed tar."""
    with out.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        writer = _HashingWriter(gz)
        with tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            dirs: set[str] = set()
            for rel, path in iter_files(root):
                parent = PurePosixPath(rel).parent
                for d in reversed([*parent.parents, parent]):
                    name = d.as_posix()
                    if name in (".", "") or name in dirs:
                        continue
                    dirs.add(name)
                    info = tarfile.TarInfo(name)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(info)
                info = tarfile.TarInfo(rel)
                info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
                with path.open("rb") as f:
                    tar.addfile(info, f)
    return f"sha256:{writer.h.hexdigest()}"


def extract_tar_gz(archive: Path, dest: Path, *, max_bytes: int) -> None:
    """Unpack regular files and directories only; any other member type or unsafe name is an error."""
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                target = inside(dest, member.name.rstrip("/"), what="archive member")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise FetchError(f"refusing archive member {member.name!r}: not a regular file or directory")
                total += member.size
                if total > max_bytes:
                    raise FetchError(f"archive {archive.name} unpacks to more than {max_bytes} bytes")
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with target.open("wb") as out:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise FetchError(f"archive {archive.name} is not a readable tar.gz: {exc}") from None
