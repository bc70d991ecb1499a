"""Print the requirement lines of pyproject.toml for an image's builder stage (stdlib only).

    python3 requirements.py pyproject.toml [--extra NAME]... [--no-core] [--core-only NAME]...

Dependencies are installed from these lines in their own layer before the source is copied, so a code
change rebuilds only the small `pip install --no-deps .` layer, never the TensorFlow download.
--no-core leaves out [project].dependencies (the serving image needs only a few of them: name those with
--core-only).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib


def _name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("pyproject")
    p.add_argument("--extra", action="append", default=[])
    p.add_argument("--no-core", action="store_true")
    p.add_argument("--core-only", action="append", default=[])
    a = p.parse_args(argv)
    with open(a.pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    core: list[str] = list(project.get("dependencies", []))
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = []
    if not a.no_core:
        out += core
    elif a.core_only:
        wanted = {n.lower().replace("_", "-") for n in a.core_only}
        picked = [r for r in core if _name(r) in wanted]
        missing = wanted - {_name(r) for r in picked}
        if missing:
            sys.exit(f"not in [project].dependencies: {', '.join(sorted(missing))}")
        out += picked
    for extra in a.extra:
        if extra not in extras:
            sys.exit(f"no extra {extra!r} in {a.pyproject} (have: {', '.join(sorted(extras))})")
        out += extras[extra]
    seen: set[str] = set()
    for req in out:
        if req not in seen:
            seen.add(req)
            print(req)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
