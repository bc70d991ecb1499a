"""``modelship build``: the model image from an optimization output, against the local Docker engine.

    modelship build --from OUTPUT_DIR --tag T [--base-image IMG] [--name NAME] [--load-kind CLUSTER]
    modelship build --load-kind CLUSTER --tag T
    modelship build context --from OUTPUT_DIR --out DIR [--base-image IMG] [--name NAME] [--revision R]

The last form is what the in-cluster build Job's init container runs. Heavy imports (docker, rich) happen
only when a subcommand runs, so the serving and operator images can register this command for free.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from typing import Any

from .local import LineSink

_TAG = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[\w][\w.-]{0,127})?$")


def _default_base_image(source: str | None = None) -> str:
    """The serving runtime to build ``source`` (an optimization output) FROM: the configured serving image
    ($MODELSHIP_SERVING_IMAGE) for a .tflite artifact, the TensorFlow-capable one
    ($MODELSHIP_SERVING_TENSORFLOW_IMAGE, else the optimizer image) for a SavedModel, which the serving image
    cannot run (it would exit at start, after a build that looked fine)."""
    from pathlib import Path

    from ..config import OperatorConfig
    from .context import load_output

    savedmodel = False
    if source is not None:
        _report, artifact = load_output(Path(source))
        savedmodel = artifact.is_dir()
    return OperatorConfig.from_env().images.serving_for(savedmodel=savedmodel)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "build",
        help="build a model image from an optimization output (local Docker engine); load it into kind",
        description="Build the serving image of an optimized model against the local Docker engine, "
        "and/or load an image into a kind cluster. `modelship build context` only renders the build context.",
    )
    p.add_argument("--from", dest="source", metavar="OUTPUT_DIR", help="optimizer output: artifact + report.json")
    p.add_argument("-t", "--tag", help="image tag to build (or to load with --load-kind)")
    p.add_argument(
        "--base-image", default=None, help="serving runtime image to build FROM (default: $MODELSHIP_SERVING_IMAGE "
        "or modelship/serving:<version>; for a SavedModel $MODELSHIP_SERVING_TENSORFLOW_IMAGE or the optimizer image)"
    )  # fmt: skip
    p.add_argument("--name", default=None, help="model name in the URLs (default: the tag's last path component)")
    p.add_argument("--revision", default=None, help="revision label (default: the report's)")
    p.add_argument("--port", type=int, default=8080, help="port the server listens on (default 8080)")
    p.add_argument("--load-kind", metavar="CLUSTER", default=None, help="load the image into this kind cluster")
    sub = p.add_subparsers(dest="build_command", metavar="SUBCOMMAND")
    c = sub.add_parser(
        "context",
        help="verify an optimization output and render its build context (Dockerfile + model) into a directory",
    )
    c.add_argument("--from", dest="ctx_source", required=True, metavar="OUTPUT_DIR")
    c.add_argument("--out", dest="ctx_out", required=True, metavar="DIR", help="empty or new directory")
    c.add_argument("--base-image", dest="ctx_base_image", default=None)
    c.add_argument("--name", dest="ctx_name", default=None, help="model name (default: model)")
    c.add_argument("--revision", dest="ctx_revision", default=None)
    c.add_argument("--port", dest="ctx_port", type=int, default=8080)
    c.add_argument("--check-base", dest="ctx_check_base", action="store_true",
                   help="refuse a base image with ONBUILD triggers (reads its config from the registry, with "
                   "$DOCKER_CONFIG/config.json credentials)")  # fmt: skip
    c.add_argument("--platform", dest="ctx_platforms", action="append", default=[], metavar="OS/ARCH",
                   help="a platform the build is for (repeatable; default linux/amd64)")  # fmt: skip
    c.add_argument("--insecure-registry", dest="ctx_insecure_registry", default=None, metavar="HOST",
                   help="a registry spoken to over plain HTTP")  # fmt: skip
    c.add_argument(
        "--expect-digest",
        dest="ctx_expect_digest",
        default=None,
        metavar="sha256:HEX",
        help="refuse an output whose artifact is not this one (the digest the operator recorded)",
    )
    p.set_defaults(func=run)
    _register_artifact(subparsers)


def _register_artifact(subparsers: Any) -> None:
    a = subparsers.add_parser(
        "artifact",
        help="hand an optimization output to a build pod (receive in the build pod, send from the export Job)",
        description="The artifact's hand-off between the tenant's namespace and the build namespace "
        "(modelship.build.handoff): one authenticated, bounded upload, accepted only with the recorded digest.",
    )
    sub = a.add_subparsers(dest="artifact_command", metavar="SUBCOMMAND", required=True)
    r = sub.add_parser("receive", help="wait for one upload and verify it (the build pod's first init container)")
    r.add_argument("--out", required=True, metavar="DIR", help="where the output is extracted")
    r.add_argument("--digest", required=True, metavar="sha256:HEX", help="the artifact digest the operator recorded")
    r.add_argument("--token-file", required=True, metavar="FILE", help="the upload token (downward API file)")
    r.add_argument("--port", type=int, default=8080)
    r.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the upload (default 600)")
    r.add_argument("--max-bytes", type=int, required=True, help="largest upload accepted")
    s = sub.add_parser("send", help="upload an optimization output to a build pod (the export Job)")
    s.add_argument("--from", dest="source", required=True, metavar="DIR", help="the optimizer's output directory")
    s.add_argument("--to", required=True, metavar="URL", help="http://HOST:PORT/artifact")
    s.add_argument("--token", required=True, help="the upload token (the build Job's uid)")
    s.add_argument("--timeout", type=float, default=300.0, help="seconds per network operation (default 300)")
    a.set_defaults(func=run_artifact)


def run_artifact(args: argparse.Namespace) -> int:
    """Exit 0 done, 1 refused, 75 temporary; the one error line also goes to the termination message."""
    from pathlib import Path

    from .handoff import HandoffError, read_token, receive, send

    try:
        if args.artifact_command == "receive":
            token = read_token(Path(args.token_file))
            done = receive(Path(args.out), digest=args.digest, token=token, port=args.port, timeout=args.timeout,
                           max_bytes=args.max_bytes)  # fmt: skip
            print(f"modelship artifact receive: accepted {done.artifact} ({done.size} bytes, {done.digest})")
        else:
            print(
                f"modelship artifact send: {send(Path(args.source), args.to, token=args.token, timeout=args.timeout)}"
            )
        return 0
    except HandoffError as exc:
        line = f"modelship artifact {args.artifact_command}: error: {exc}"
        print(line, file=sys.stderr, flush=True)
        termination = Path("/dev/termination-log")
        if termination.exists():
            with contextlib.suppress(OSError):
                termination.write_text(line[:1024] + "\n")
        return exc.exit_code


def _sink(quiet: bool = False) -> tuple[LineSink, Any]:
    """Where build log lines go: rich on a terminal, plain lines to stderr otherwise."""
    if quiet:
        return (lambda _line: None), None
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.markup import escape

        console = Console(stderr=True, highlight=False)

        def rich_line(line: str) -> None:
            if line.startswith("Step "):
                console.print(f"[bold cyan]{escape(line)}[/]")
            elif line.startswith((" ---> ", "Removing intermediate")):
                console.print(f"[dim]{escape(line)}[/]")
            else:
                console.print(escape(line))

        return rich_line, console

    def plain_line(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return plain_line, None


def _default_name(tag: str) -> str:
    repo = tag.rsplit("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    last = last.split(":", 1)[0]
    return last or "model"


def run(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from .context import ContextError
    from .local import BuildError

    try:
        if getattr(args, "build_command", None) == "context":
            return _run_context(args)
        return _run_build(args)
    except (ContextError, BuildError) as exc:
        raise CliError(str(exc)) from None


def _run_context(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from .baseimage import BaseImageError, ImageRef, refuse_onbuild
    from .context import render_context

    base = args.ctx_base_image or _default_base_image(args.ctx_source)
    if args.ctx_check_base:
        config_dir = os.environ.get("DOCKER_CONFIG")
        try:
            refuse_onbuild(base, args.ctx_platforms or ["linux/amd64"],
                           plain_http=ImageRef.parse(base).host == args.ctx_insecure_registry,
                           docker_config=Path(config_dir) if config_dir else None)  # fmt: skip
        except BaseImageError as exc:
            print(f"modelship build context: error: {exc}", file=sys.stderr, flush=True)
            return 75 if exc.temporary else 1
        print(f"base image {base}: no ONBUILD triggers")
    ctx = render_context(
        args.ctx_source,
        args.ctx_out,
        base_image=base,
        name=args.ctx_name,
        revision=args.ctx_revision,
        port=args.ctx_port,
        expect_digest=args.ctx_expect_digest,
    )
    print(
        f"build context in {ctx.path}: FROM {ctx.base_image}, {ctx.model_path} ({ctx.artifact_digest}), "
        f"model name {ctx.name}, revision {ctx.revision or '-'}, {len(ctx.labels)} labels"
    )
    return 0


def _run_build(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from .local import build_local, load_into_kind

    if not args.source and not args.load_kind:
        raise CliError(
            "nothing to do: --from OUTPUT_DIR --tag T builds an image, --load-kind CLUSTER --tag T loads one"
        )
    if not args.tag:
        raise CliError("--tag is required")
    if not _TAG.match(args.tag):
        raise CliError(f"--tag {args.tag!r} is not a valid image reference (lowercase repository[:tag])")
    on_line, console = _sink()
    if args.source:
        base = args.base_image or _default_base_image(args.source)
        name = args.name or _default_name(args.tag)
        if console is not None:
            with console.status(f"building {args.tag} FROM {base}"):
                image = build_local(
                    args.source, args.tag, base_image=base, name=name, revision=args.revision, port=args.port,
                    on_line=on_line,
                )  # fmt: skip
        else:
            image = build_local(
                args.source, args.tag, base_image=base, name=name, revision=args.revision, port=args.port,
                on_line=on_line,
            )  # fmt: skip
        print(
            f"built {image.tag} ({image.image_id[:19]}, {image.size / 1e6:.1f} MB): model {image.context.name} "
            f"{image.context.artifact_digest}, revision {image.context.revision or '-'}"
        )
    if args.load_kind:
        load_into_kind(args.tag, args.load_kind, on_line)
        print(f"loaded {args.tag} into kind cluster {args.load_kind}")
    return 0
