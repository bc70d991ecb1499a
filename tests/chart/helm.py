"""Run the real helm binary (from hack/tools/install-helm) against charts/modelship."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "modelship"


def helm_path() -> str | None:
    """$MODELSHIP_HELM, else hack/tools/install-helm's cache symlink, else helm on PATH."""
    explicit = os.environ.get("MODELSHIP_HELM")
    if explicit:
        return explicit
    cached = Path(os.environ.get("MODELSHIP_CACHE") or "/var/cache/modelship") / "tools" / "bin" / "helm"
    if os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which("helm")


@dataclass(frozen=True)
class Helm:
    binary: str

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # an empty HELM_* home: no user repositories/plugins/caches leak in, nothing is written to ~
        home = "/tmp/modelship-helm"
        env = {**os.environ, **{f"HELM_{d}_HOME": f"{home}/{d.lower()}" for d in ("CACHE", "CONFIG", "DATA")}}
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=timeout, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def template_args(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        release: str = "ms",
        namespace: str = "modelship-system",
        api_versions: Sequence[str] = (),
        include_crds: bool = False,
        value_files: Sequence[Path] = (),
    ) -> list[str]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        for f in value_files:
            args += ["-f", str(f)]
        if values:
            # values as a YAML file on stdin would need a tmp file anyway: --set-json keeps types exact
            for key, value in values.items():
                args += ["--set-json", f"{key}={_json(value)}"]
        for v in api_versions:
            args += ["--api-versions", v]
        if include_crds:
            args.append("--include-crds")
        return args

    def template(self, values: Mapping[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        """Rendered objects (comments and empty documents dropped)."""
        out = self.run(*self.template_args(values, **kw)).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def notes(self, values: Mapping[str, Any] | None = None, **kw: Any) -> str:
        """The NOTES `helm install` prints (a client-side dry run: nothing is sent anywhere)."""
        args = self.template_args(values, **kw)
        args[0] = "install"
        out = self.run(*args, "--dry-run=client").stdout
        assert "NOTES:" in out, out[-2000:]
        return out.split("NOTES:", 1)[1]

    def template_error(self, values: Mapping[str, Any] | None = None, **kw: Any) -> str:
        """helm template must fail: its stderr."""
        proc = self.run(*self.template_args(values, **kw), check=False)
        assert proc.returncode != 0, f"helm template accepted {values!r}:\n{proc.stdout[:2000]}"
        return proc.stderr


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def find(objs: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [dict(o) for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container_env(deployment: Mapping[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}
