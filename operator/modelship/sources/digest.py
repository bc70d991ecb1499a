"""Content digests: ``sha256:<hex>`` of a file's bytes, or of a deterministic stream over a directory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import FetchError

CHUNK = 1 << 20


def iter_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Regular files under root as (posix relative path, path), sorted by relative path (symlinks skipped)."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    yield from found


def hash_file_into(path: Path, h: Any) -> None:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    hash_file_into(path, h)
    return f"sha256:{h.hexdigest()}"


def sha256_path(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file, or of a directory.

    For a directory the hash runs over every regular file, sorted by its relative POSIX path; each contributes
    ``path UTF-8, NUL, size as 8 bytes big-endian, content``. Renaming, moving or editing any file changes the
    digest; file times, permissions and empty directories do not.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for rel, file in iter_files(p):
            h.update(rel.encode("utf-8"))
            h.update(b"\0")
            h.update(file.stat().st_size.to_bytes(8, "big"))
            hash_file_into(file, h)
    elif p.is_file():
        hash_file_into(p, h)
    else:
        raise FetchError(f"{p} does not exist")
    return f"sha256:{h.hexdigest()}"


def size_of(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or the sum over the regular files of a directory."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for _, f in iter_files(p))
    return p.stat().st_size
