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

from ..fetch import DEFAULT_PVC_ROOT, ROLE_FIELDS, Access, FetchError, Sources

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_ENV = "MODELSHIP_TERMINATION_LOG"
EXIT_BLOCKED = 3
"""Exit code of a run the gate blocked, with ``--fail-on-block`` only (a CI step fails; 1 and 75 keep their meaning:
wrong input, and a failure a retry may fix). The optimization Job never passes the flag: it reads the decision from
the summary."""


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
    p.add_argument(
        "--model", metavar="URI", help="model path or URI (file://, pvc://, http(s)://, s3://, oci://, models:/)"
    )
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
    p.add_argument(
        "--allow-code",
        action="store_true",
        help="run the Python a model carries (Lambda layers, custom objects) or a custom metric's code; refused "
        "otherwise (spec.model.allowCode; the default with --spec is the spec's)",
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
        "--ca-bundle",
        metavar="PEM",
        default=os.environ.get("MODELSHIP_CA_BUNDLE"),
        help="extra CA certificates for every source (added to the system's)",
    )
    p.add_argument(
        "--endpoint",
        metavar="URL",
        default=os.environ.get("MODELSHIP_STORAGE_ENDPOINT"),
        help="S3-compatible endpoint, registry base URL or MLflow tracking server for every source",
    )
    p.add_argument(
        "--sources-json",
        metavar="JSON",
        help="per source (model, evaluation, calibration, fineTune): {endpoint, caFile, credentialsDir}; credentials "
        "of a source given here come only from its credentialsDir (the operator passes it)",
    )
    p.add_argument(
        "--push-to",
        metavar="oci://REPO:TAG",
        help="push the shipped artifact there as an OCI artifact (what serving pods pull when no image is built)",
    )
    p.add_argument("--push-plain-http", action="store_true", help="push over HTTP (a registry without TLS)")
    p.add_argument(
        "--push-credentials-dir", metavar="DIR", help="registry credentials (.dockerconfigjson) for --push-to"
    )
    p.add_argument(
        "--fail-on-block",
        action="store_true",
        help=f"exit {EXIT_BLOCKED} when the gate blocks (onFail Block, or nothing passed), for a CI step; by default "
        "a blocked run exits 0 (it finished: report.json's summary.decision says Blocked)",
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


LOCAL_DATA_HINT = "a local file is pvc://DIR/FILE with --pvc-root ROOT (it reads ROOT/DIR/FILE)"


def _validation(what: str, exc: ValidationError) -> UsageError:
    from ..api.errors import describe_validation_error

    text = describe_validation_error(exc)
    first = exc.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    if first["type"] == "string_pattern_mismatch" and "data" in loc and loc[-1] == "uri":
        text += f"; {LOCAL_DATA_HINT}"  # a path or file:// URI: the pattern alone does not say what to write
    return UsageError(f"invalid {what}: {text}")


def _load_spec(path: str) -> tuple[Any, Any]:
    """(ModelSource, Optimization) from a ModelDeployment YAML."""
    import yaml

    from ..api.modeldeployment import ModelDeployment

    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except OSError as exc:
        raise UsageError(f"--spec {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--spec {path}: not a text file (expected ModelDeployment YAML)") from None
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


def credential_dirs(args: argparse.Namespace) -> list[Path]:
    """Every credentials directory this run was given (its sources' and the push's), read leniently: an error
    text is redacted of their values even when the arguments themselves are what failed."""
    dirs = [Path(args.push_credentials_dir)] if getattr(args, "push_credentials_dir", None) else []
    try:
        given = json.loads(getattr(args, "sources_json", None) or "{}")
    except ValueError:
        return dirs
    if isinstance(given, dict):
        for value in given.values():
            if isinstance(value, dict) and isinstance(value.get("credentialsDir"), str):
                dirs.append(Path(value["credentialsDir"]))
    return dirs


def parse_sources(args: argparse.Namespace) -> Sources:
    """Sources from --sources-json (roles the operator configured) over the CLI-wide defaults."""
    default = Access(
        endpoint=getattr(args, "endpoint", None),
        ca_file=Path(args.ca_bundle) if getattr(args, "ca_bundle", None) else None,
        environment=True,
    )
    text = getattr(args, "sources_json", None)
    if not text:
        return Sources(default=default)
    try:
        given = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--sources-json is not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(given, dict):
        raise UsageError("--sources-json must be an object keyed by source (model, evaluation, ...)")
    roles: dict[str, Access] = {}
    for role, value in given.items():
        if role not in ROLE_FIELDS or not isinstance(value, dict):
            raise UsageError(f"--sources-json: unknown source {role!r} (one of {', '.join(ROLE_FIELDS)})")
        unknown = set(value) - {"endpoint", "caFile", "credentialsDir"}
        if unknown:
            raise UsageError(f"--sources-json: {role}: unknown keys {sorted(unknown)}")
        roles[role] = Access(
            endpoint=value.get("endpoint"),
            ca_file=Path(value["caFile"]) if value.get("caFile") else None,
            credentials_dir=Path(value["credentialsDir"]) if value.get("credentialsDir") else None,
            environment=False,
        )
    return Sources(roles=roles, default=default)


OUT_USAGE_ERRNOS = frozenset(
    {"EROFS", "EACCES", "EPERM", "ENOTDIR", "EEXIST", "EISDIR", "ENOENT", "ENAMETOOLONG", "ELOOP", "EINVAL"}
)
"""Why --out cannot be written that are the path's own (read-only, not permitted, under a file, a name no
directory can have): a usage error. Others (ENOSPC, EDQUOT, EIO, ESTALE on the artifact claim, ...) may pass: a
temporary failure, which a Job retries."""


def check_out_dir(out: Path) -> None:
    """Refuse an output directory this process cannot write before anything runs: otherwise the whole optimization
    ran first and its end was an 'internal error' (exit 75, as if a retry could help). The path's own fault is a
    usage error (exit 1); a full, failing or stale file system is temporary (exit 75)."""
    import errno
    import tempfile

    from .errors import OptimizeError

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".modelship-write-check-"):
            pass
    except OSError as exc:
        why = f"--out {out}: cannot write there ({exc.strerror or exc})"
        if errno.errorcode.get(exc.errno or 0) in OUT_USAGE_ERRNOS:
            raise UsageError(why) from None
        raise OptimizeError(why, temporary=True) from None


def check_out_spares_the_model(out: Path, model_uri: str, pvc_root: str) -> None:
    """Refuse an --out where the run's own files would replace a local model (``DIR/saved_model`` optimized with
    ``--out DIR``): the outputs are cleared first, so the model was deleted, then read ('internal error:
    FileNotFoundError') or replaced by the result."""
    from ..fetch import local_path
    from .outputs import REPORT_FILE, SAVED_MODEL_DIR, TFLITE_FILE

    try:
        model = local_path(model_uri, pvc_root=pvc_root)
    except FetchError:
        return  # the fetch says what is wrong with the URI
    if model is None:
        return
    model = model.resolve()
    for name in (TFLITE_FILE, SAVED_MODEL_DIR, REPORT_FILE):
        written = (out / name).resolve()
        if model == written or written in model.parents:
            raise UsageError(
                f"--out {out}: the run writes {written} and would replace the model {model_uri}: choose another --out"
            )


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
    check_out_dir(out)
    model_uri, fmt, digest = args.model, args.format, args.digest
    pvc_root = args.pvc_root
    allow_code = bool(getattr(args, "allow_code", False))
    if args.spec:
        source, opt = _load_spec(args.spec)
        allow_code = allow_code or source.allow_code
        model_uri = model_uri or source.uri
        fmt = fmt or (source.format.value if source.format else None)
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
    check_out_spares_the_model(out, model_uri, pvc_root)
    if digest is not None and not (digest.startswith("sha256:") and len(digest) == 71):
        raise UsageError(f"--digest {digest}: expected sha256:<64 hex digits>")
    return Request(
        model=model_uri,
        optimization=opt,
        out_dir=out,
        model_format=ModelFormat(fmt) if fmt else None,
        digest=digest,
        pvc_root=pvc_root,
        sources=parse_sources(args),
        seed=args.seed,
        threads=max(1, args.threads),
        speed_seconds=max(0.05, args.latency_seconds),
        allow_code=allow_code,
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
    from ..api.redact import redact
    from ..api.report import EXIT_CODES, FailureKind, Report, Summary
    from ..credentials import known_secrets

    # the summary reaches status and Events, the stderr line the pod's log: neither carries credentials
    message = redact(message, known_secrets(extra=credential_dirs(args)), limit=1024)
    failure = FailureKind.TEMPORARY if temporary else FailureKind.PERMANENT
    summary = Summary(
        ok=False,
        error=message,
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


def push_artifact(args: argparse.Namespace, out_dir: Path, report: Any) -> Any:
    """Push the shipped artifact (--push-to) and record its pinned reference in the summary and report.json."""
    from ..sources.oci import Reference, push

    artifact = Path(out_dir) / report.summary.artifact
    access = Access(
        endpoint=f"http://{Reference.parse(args.push_to).host}" if args.push_plain_http else None,
        credentials_dir=Path(args.push_credentials_dir) if args.push_credentials_dir else None,
        environment=not args.push_credentials_dir,
    )
    fmt = "savedmodel" if artifact.is_dir() else "tflite"
    pinned = push(artifact, args.push_to, access, model_format=fmt)
    summary = report.summary.model_copy(update={"artifact_ref": pinned})
    report = report.model_copy(update={"summary": summary})
    text = report.model_dump_json(by_alias=True, exclude_none=True, indent=2)
    (Path(out_dir) / "report.json").write_text(text + "\n")
    print(f"pushed {artifact.name} to {pinned}")
    return report


def run(args: argparse.Namespace) -> int:
    """Run the optimizer from parsed arguments; 0 when it finished (whatever the gate decided, unless
    ``--fail-on-block``: EXIT_BLOCKED), else the exit code of the failure's kind (``api.report.EXIT_CODES``: 1
    permanent, 75 temporary)."""
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
    if getattr(args, "push_to", None) and report.summary.artifact:
        try:
            report = push_artifact(args, request.out_dir, report)
        except FetchError as exc:
            fetched = {"source_digest": report.summary.source_digest, "source_bytes": report.summary.source_bytes}
            return _fail(args, f"pushing the artifact to {args.push_to}: {exc}", fetched, temporary=exc.temporary)
    write_termination(termination_path(args), report.summary.to_line())
    from . import render

    render.print_report(report)
    if args.plot:
        try:
            render.plot(report, Path(args.plot))
        except Exception as exc:  # a plot is a nicety: never fail the run for it
            print(f"modelship optimize: warning: cannot write the plot {args.plot}: {exc}", file=sys.stderr)
    print(render.last_line(report, Path(request.out_dir)))
    return exit_code(report, fail_on_block=bool(getattr(args, "fail_on_block", False)))


def exit_code(report: Any, *, fail_on_block: bool) -> int:
    """0 for a finished run whatever the gate decided; EXIT_BLOCKED for a blocked one when asked to fail on it."""
    from ..api.report import ShipDecision

    return EXIT_BLOCKED if fail_on_block and report.summary.decision == ShipDecision.BLOCKED else 0
