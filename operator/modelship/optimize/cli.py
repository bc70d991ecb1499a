"""``modelship optimize``: what the optimization Job runs, and what a user runs on a laptop.

TensorFlow is imported only when the command runs (the top-level CLI and the operator image stay light).
Errors print one line to stderr, exit 1, and still write the ok=false summary to the termination-message path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..fetch import DEFAULT_PVC_ROOT, FetchError

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_ENV = "MODELSHIP_TERMINATION_LOG"


def register(subparsers: Any) -> None:
    """Add the ``optimize`` subcommand."""
    p = subparsers.add_parser(
        "optimize",
        help="optimize a Keras/TF model behind an accuracy gate (prune, cluster, low-rank, quantize)",
        description=(
            "Fetch a model, run the optimization steps (or an automatic search), evaluate against the original, "
            "apply the accuracy gate, and write the artifact (model.tflite or saved_model/) and report.json to --out. "
            "Data URIs in the optimization need a scheme: for local files use pvc://DIR/file with --pvc-root."
        ),
    )
    p.add_argument("--model", metavar="URI", help="model path or URI (file://, pvc://, http(s)://, s3://, gs://)")
    p.add_argument("--format", choices=["keras", "h5", "savedmodel", "tflite"], help="model format (default: inferred)")
    p.add_argument("--digest", metavar="sha256:HEX", help="pinned model digest; a mismatch fails before anything runs")
    src = p.add_argument_group("what to do (one of)")
    src.add_argument("--spec", metavar="FILE", help="a ModelDeployment YAML: its spec.model and spec.optimization")
    src.add_argument(
        "--optimization-json", metavar="JSON", help="the Optimization object (camelCase), as the operator passes it"
    )
    src.add_argument(
        "--example",
        choices=["linear", "digits-mlp", "digits-cnn", "two-inputs"],
        help="train a small example model into OUT/example and optimize it with its default optimization",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory: artifact + report.json")
    p.add_argument(
        "--termination-log",
        metavar="PATH",
        help=f"where the one-line summary goes (env {TERMINATION_ENV}; default {DEFAULT_TERMINATION_LOG} if it exists)",
    )
    p.add_argument(
        "--pvc-root",
        metavar="DIR",
        default=os.environ.get("MODELSHIP_PVC_ROOT", DEFAULT_PVC_ROOT),
        help=f"where pvc://CLAIM/path resolves: DIR/CLAIM/path (default {DEFAULT_PVC_ROOT})",
    )
    p.add_argument(
        "--ca-bundle", metavar="PEM", default=os.environ.get("MODELSHIP_CA_BUNDLE"), help="CA bundle for https/s3"
    )
    p.add_argument("--plot", metavar="PNG", help="also write a plot of size vs metric per candidate")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads for latency measurements (default 1)")
    p.add_argument(
        "--latency-seconds", type=float, default=1.0, help="time spent timing each model variant (default 1.0)"
    )
    p.set_defaults(func=run)


class UsageError(Exception):
    pass


def _validation(what: str, exc: ValidationError) -> UsageError:
    from ..api.errors import describe_validation_error

    return UsageError(f"invalid {what}: {describe_validation_error(exc)}")


def _load_spec(path: str) -> tuple[Any, Any]:
    """(ModelSource, Optimization) from a ModelDeployment YAML."""
    import yaml

    from ..api.modeldeployment import ModelDeployment

    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except OSError as exc:
        raise UsageError(f"--spec {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--spec {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    docs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ModelDeployment"]
    if not docs:
        raise UsageError(f"--spec {path}: no ModelDeployment in the file")
    try:
        md = ModelDeployment.from_body(docs[0])
    except ValidationError as exc:
        raise _validation(f"ModelDeployment in {path}", exc) from None
    return md.spec.model, md.spec.optimization


def build_request(args: argparse.Namespace) -> Any:
    """A Request from the command line (validated with the API models)."""
    from ..api.optimization import Optimization
    from ..api.source import ModelFormat
    from .request import Request

    given = [name for name in ("spec", "optimization_json", "example") if getattr(args, name, None)]
    if len(given) > 1:
        raise UsageError("give one of --spec, --optimization-json or --example")
    if not given:
        raise UsageError("nothing to do: give --spec FILE, --optimization-json JSON or --example NAME")
    out = Path(args.out)
    model_uri, fmt, digest = args.model, args.format, args.digest
    pvc_root = args.pvc_root
    if args.spec:
        source, opt = _load_spec(args.spec)
        model_uri = model_uri or source.uri
        fmt = fmt or source.format.value
        digest = digest or source.digest
    elif args.optimization_json:
        try:
            opt = Optimization.model_validate(json.loads(args.optimization_json))
        except json.JSONDecodeError as exc:
            raise UsageError(f"--optimization-json is not valid JSON ({exc.msg} at position {exc.pos})") from None
        except ValidationError as exc:
            raise _validation("optimization", exc) from None
    else:
        from . import examples

        ex = examples.make(args.example, out / "example", seed=args.seed)
        opt = ex.optimization
        model_uri = model_uri or str(ex.model)
        pvc_root = str(ex.root)
    if not model_uri:
        raise UsageError("no model: give --model URI (or a --spec with spec.model.uri)")
    if digest is not None and not (digest.startswith("sha256:") and len(digest) == 71):
        raise UsageError(f"--digest {digest}: expected sha256:<64 hex digits>")
    return Request(
        model=model_uri,
        optimization=opt,
        out_dir=out,
        model_format=ModelFormat(fmt) if fmt else None,
        digest=digest,
        pvc_root=pvc_root,
        ca_bundle=args.ca_bundle,
        endpoint=os.environ.get("MODELSHIP_STORAGE_ENDPOINT"),
        seed=args.seed,
        threads=max(1, args.threads),
        speed_seconds=max(0.05, args.latency_seconds),
    )


def termination_path(args: argparse.Namespace) -> Path | None:
    """The explicit path (flag or env), or the default only where it exists (inside a Pod)."""
    explicit = args.termination_log or os.environ.get(TERMINATION_ENV)
    if explicit:
        return Path(explicit)
    default = Path(DEFAULT_TERMINATION_LOG)
    return default if default.exists() else None


def write_termination(path: Path | None, line: str) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n")
    except OSError as exc:
        print(
            f"modelship optimize: warning: cannot write the summary to {path}: {exc.strerror or exc}", file=sys.stderr
        )


def _fail(args: argparse.Namespace, message: str, context: dict[str, Any], *, temporary: bool = False) -> int:
    """Report a failure (summary, report.json, one stderr line); the exit code says whether a retry of the same
    input may succeed (the optimization Job fails at once on the permanent one)."""
    from ..api.report import EXIT_CODES, FailureKind, Report, Summary

    message = " ".join(message.split())
    failure = FailureKind.TEMPORARY if temporary else FailureKind.PERMANENT
    summary = Summary(
        ok=False,
        error=message[:1024],
        failure=failure,
        source_digest=context.get("source_digest"),
        source_bytes=context.get("source_bytes"),
    )
    write_termination(termination_path(args), summary.to_line())
    out = getattr(args, "out", None)
    if out:
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
            report = Report(summary=summary)
            (Path(out) / "report.json").write_text(
                report.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n"
            )
        except OSError:
            pass
    print(f"modelship optimize: error: {message}", file=sys.stderr)
    return EXIT_CODES[failure]


def run(args: argparse.Namespace) -> int:
    """Run the optimizer from parsed arguments; 0 when it finished (whatever the gate decided), 1 on error."""
    from .errors import OptimizeError, first_line

    try:
        request = build_request(args)
        from .pipeline import optimize
        from .progress import Progress

        with Progress() as progress:
            report = optimize(request, progress)
    except UsageError as exc:
        return _fail(args, str(exc), {})
    except OptimizeError as exc:
        return _fail(args, str(exc), exc.context, temporary=exc.temporary)
    except FetchError as exc:
        return _fail(args, str(exc), {}, temporary=exc.temporary)
    except ValidationError as exc:
        return _fail(args, str(_validation("input", exc)), {})
    except KeyboardInterrupt:
        _fail(args, "interrupted", {})
        return 130
    except Exception as exc:  # unexpected: still one readable line and an ok=false summary
        if os.environ.get("MODELSHIP_DEBUG") == "1":
            traceback.print_exc()
        return _fail(args, f"internal error: {type(exc).__name__}: {first_line(exc)}", {}, temporary=True)
    write_termination(termination_path(args), report.summary.to_line())
    from . import render

    render.print_report(report)
    if args.plot:
        try:
            render.plot(report, Path(args.plot))
        except Exception as exc:  # a plot is a nicety: never fail the run for it
            print(f"modelship optimize: warning: cannot write the plot {args.plot}: {exc}", file=sys.stderr)
    s = report.summary
    where = Path(request.out_dir) / s.artifact if s.artifact else "nothing (blocked)"
    print(f"{s.decision.value if s.decision else ''}: {where}; report {Path(request.out_dir) / 'report.json'}")
    return 0
