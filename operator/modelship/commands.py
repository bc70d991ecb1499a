"""`modelship crd` and `modelship render`: the API and its desired state, without a cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .api.errors import describe_validation_error
from .api.modeldeployment import ModelDeployment
from .config import OperatorConfig


def register(subparsers: Any) -> None:
    crd = subparsers.add_parser("crd", help="print the ModelDeployment CustomResourceDefinition (generated)")
    crd.set_defaults(func=run_crd)
    render = subparsers.add_parser("render", help="print the Kubernetes objects a ModelDeployment leads to")
    render.add_argument("-f", "--filename", required=True, help="ModelDeployment YAML file ('-' for stdin)")
    render.add_argument(
        "-n", "--namespace", default=None, help="namespace to render into (default: the file's or 'default')"
    )
    render.add_argument("--image", default=None, help="serving image to assume (default: repository:revision)")
    render.set_defaults(func=run_render)


def run_crd(args: argparse.Namespace) -> int:
    from .api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def load_modeldeployments(path: str) -> list[ModelDeployment]:
    """Parse every ModelDeployment in a YAML file; raise CliError with one readable line otherwise."""
    from .cli import CliError

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a text file (expected ModelDeployment YAML)") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CliError(f"{path}: not valid YAML{where}: {problem}") from None
    if not docs:
        raise CliError(f"{path}: no objects in the file")
    out = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or doc.get("kind") != "ModelDeployment":
            kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            what = "has no kind" if kind is None else f"is {kind!r}"
            raise CliError(f"{path}: document {i + 1} {what}, not a ModelDeployment")
        try:
            out.append(ModelDeployment.from_body(doc))
        except ValidationError as exc:
            raise CliError(f"{path}: {describe_validation_error(exc)}") from None
    return out


def run_render(args: argparse.Namespace) -> int:
    from .cli import CliError
    from .resources.defaults import InvalidSpec, with_operator_defaults
    from .resources.plan import render_all

    config = OperatorConfig.from_env()
    docs = []
    for md in load_modeldeployments(args.filename):
        namespace = args.namespace or md.metadata.namespace or "default"
        md = md.model_copy(update={"metadata": md.metadata.model_copy(update={"namespace": namespace})})
        try:
            md = with_operator_defaults(md, config)
        except InvalidSpec as exc:
            raise CliError(f"{args.filename}: {md.metadata.name}: {exc}") from None
        docs += render_all(md, config, args.image)
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, width=120))
    return 0
