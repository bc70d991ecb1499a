"""The main job on the embedded default, on one machine, no cluster (`hack/demo/local`).

Trains the seed's model (y = 2x - 1, a one-neuron Keras model saved as .h5) or a digits model, optimizes it
behind the accuracy gate (`modelship optimize`), serves the artifact (`modelship serve`) on loopback, calls it
over HTTP with both protocols, and prints what came back next to what it should be.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

EXAMPLES = ("linear", "digits-mlp", "digits-cnn")


class CliError(Exception):
    """An error to print as one line (no traceback) with exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hack/demo/local",
        description="train, optimize, serve and call the embedded example model on this machine (no cluster), "
        "with the `modelship` CLI (optimize, serve) of this checkout",
    )
    p.add_argument("--example", choices=EXAMPLES, default="linear", help="which embedded model (default: linear)")
    p.add_argument("--work-dir", help="where models, artifacts and the report go (default: a temporary directory)")
    p.add_argument("--port", type=int, default=0, help="server port on 127.0.0.1 (default: a free one)")
    p.add_argument("--keep-serving", action="store_true", help="keep the server running until Ctrl-C")
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(method: str, url: str, body: Any = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise CliError(f"{method} {url}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}") from None


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(f"the model server exited with code {proc.returncode} before it was ready")
        try:
            urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise CliError(f"the model server was not ready after {timeout:.0f}s")


def _inputs(example: str, work: Path) -> tuple[list[Any], list[Any], str]:
    """Held-out inputs, what the answers should be, and how to compare them."""
    if example == "linear":
        xs = [-1.0, 0.0, 0.5, 1.5, 2.0, 3.25, 4.0]
        return [[x] for x in xs], [2 * x - 1 for x in xs], "regression"
    import numpy as np

    test = np.load(work / "opt" / "example" / "examples" / example / "eval.npz")
    n = 8
    return test["x"][:n].tolist(), test["y"][:n].astype(int).tolist(), "classification"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="modelship-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "opt"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    console.rule(f"[bold]1/3 optimize[/] the embedded {args.example} model behind the accuracy gate")
    code = subprocess.call(
        [sys.executable, "-m", "modelship", "optimize", "--example", args.example, "--out", str(out)], env=env
    )
    if code != 0:
        raise CliError(f"modelship optimize failed with exit code {code}")
    report = json.loads((out / "report.json").read_text())
    summary = report["summary"]
    if not summary.get("artifact"):
        raise CliError(f"the gate blocked the optimized model: {summary.get('message')}")
    artifact = out / summary["artifact"]

    console.rule("[bold]2/3 serve[/] the artifact with the Modelship runtime (TF Serving REST + Open Inference v2)")
    port = args.port or _free_port()
    base = f"http://127.0.0.1:{port}"
    name = args.example
    server = subprocess.Popen(
        [sys.executable, "-m", "modelship", "serve", "--model", str(artifact), "--name", name,
         "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0"],
        env=env,
        stdout=(work / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_ready(base, server)
        console.print(f"serving {artifact} at {base}/v2/models/{name}/infer and {base}/v1/models/{name}:predict")

        console.rule("[bold]3/3 call[/] the model over HTTP")
        inputs, expected, kind = _inputs(args.example, work)
        v1 = _http("POST", f"{base}/v1/models/{name}:predict", {"instances": inputs})["predictions"]
        import numpy as np

        arr = np.asarray(inputs, dtype=np.float32)
        shape, flat = list(arr.shape), arr.reshape(-1).tolist()
        meta = _http("GET", f"{base}/v2/models/{name}")
        tensor = meta["inputs"][0]["name"]
        v2 = _http("POST", f"{base}/v2/models/{name}/infer",
                   {"inputs": [{"name": tensor, "shape": shape, "datatype": "FP32", "data": flat}]})  # fmt: skip
        out0 = v2["outputs"][0]
        width = out0["shape"][-1] if len(out0["shape"]) > 1 else 1
        v2_rows = [out0["data"][i * width : (i + 1) * width] for i in range(len(inputs))]
        table = Table(title=f"{name}: predictions over HTTP")
        table.add_column("input")
        table.add_column("expected")
        table.add_column("TF Serving REST")
        table.add_column("Open Inference v2")
        worst = 0.0
        for x, want, a, b in zip(inputs, expected, v1, v2_rows, strict=True):
            if kind == "regression":
                got_a, got_b = float(a[0]), float(b[0])
                worst = max(worst, abs(got_a - want), abs(got_b - want))
                table.add_row(f"x={x[0]:g}", f"{want:g}", f"{got_a:.3f}", f"{got_b:.3f}")
            else:
                got_a, got_b = max(range(len(a)), key=a.__getitem__), max(range(len(b)), key=b.__getitem__)
                worst = max(worst, float(got_a != want), float(got_b != want))
                table.add_row(f"digit #{len(table.rows)}", str(want), str(got_a), str(got_b))
        console.print(table)
        ratio = summary.get("compression_ratio") or summary.get("compressionRatio")
        console.print(
            f"gate: [bold]{summary.get('gate')}[/] ({summary.get('message')}); "
            f"size {summary.get('original_bytes') or summary.get('originalBytes')} -> "
            f"{summary.get('optimized_bytes') or summary.get('optimizedBytes')} bytes"
            + (f", gzip ratio {ratio:.1f}x" if ratio else "")
        )
        console.print(f"report: {out / 'report.json'}")
        tolerance = 0.25 if kind == "regression" else 0.0
        if kind == "regression" and worst > tolerance:
            raise CliError(f"the served model is off by {worst:.3f} (more than {tolerance})")
        if args.keep_serving:
            console.print(f"serving at {base} until Ctrl-C")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CliError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
