"""The secret values this process holds, so that its error texts can be stripped of them (``api.redact``): the
credential files mounted under ``/var/run/modelship`` (source, push and pull credentials, one value per file, plus
the strings inside a ``.dockerconfigjson`` and the passwords in its base64 ``auth`` entries) and the values of
environment variables whose names say they are secret. Bounded: a few hundred small files at most."""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .api.redact import SECRET_NAME

CREDENTIALS_ROOT = Path("/var/run/modelship")
NOT_SECRET_VARIABLES = frozenset({"PWD", "OLDPWD"})
"""Names that look secret but are the shell's working directories: redacting them would blank every path under
the directory the command was run from (``pvc://x/y.h5: [redacted]/x/y.h5 does not exist``)."""
MAX_FILES = 256
MAX_FILE_BYTES = 64 * 1024


def known_secrets(
    root: Path = CREDENTIALS_ROOT, env: Mapping[str, str] | None = None, extra: Iterable[Path] = ()
) -> set[str]:
    """The secret values under ``root`` and the ``extra`` credential directories (a source's ``credentialsDir``,
    ``--push-credentials-dir``: wherever they are mounted) and in the secret-named environment variables."""
    values: set[str] = set()
    environ = os.environ if env is None else env
    values.update(v for k, v in environ.items() if SECRET_NAME.search(k) and k not in NOT_SECRET_VARIABLES and v)
    paths = [p for r in dict.fromkeys((root, *extra)) for p in _files(r)]
    for path in paths[:MAX_FILES]:
        try:
            text = path.read_bytes()[:MAX_FILE_BYTES].decode("utf-8", errors="replace")
        except OSError:
            continue
        values.add(text.strip())
        values.update(line.strip() for line in text.splitlines() if line.strip())
        values.update(_json_strings(text))
    return {v for v in values if v}


def _files(root: Path) -> Iterator[Path]:
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith("..")]  # the Secret volume's timestamped dirs
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith("..") or not path.is_file():
                continue
            yield path
            count += 1
            if count >= MAX_FILES:
                return


def _json_strings(text: str) -> Iterator[str]:
    try:
        doc: Any = json.loads(text)
    except ValueError:
        return
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "auth" and isinstance(value, str):
                    try:
                        _user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
                        yield password
                    except (binascii.Error, UnicodeDecodeError):
                        pass
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            yield item
