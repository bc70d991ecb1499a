"""Human-readable output of a report: a rich table, and a PNG plot of size against metric per candidate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..api.report import Measurement, Report
from .gate import fmt


def _kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:,.1f}"


def _nz(m: Measurement) -> str:
    if not m.params or m.nonzero_params is None:
        return "-"
    return f"{m.nonzero_params / m.params:.0%}"


def table_title(report: Report) -> str:
    """``Variants of the Steps optimization, by accuracy``: a title, not an error line (those read
    ``modelship optimize: error: ...``)."""
    strategy = f"the {report.strategy} optimization" if report.strategy else "the optimization"
    return f"Variants of {strategy}, by {report.summary.metric_name or 'metric'}"


def last_line(report: Report, out_dir: Path) -> str:
    """What the run leaves: ``Optimized: DIR/model.tflite; report DIR/report.json``, or for a blocked run what
    was blocked and why, in the gate's numbers."""
    s = report.summary
    written = out_dir / "report.json"
    if s.artifact:
        return f"{s.decision.value if s.decision else 'Done'}: {out_dir / s.artifact}; report {written}"
    return f"Blocked: nothing ships, {blocked_reason(report)}; only the report was written: {written}"


def blocked_reason(report: Report) -> str:
    """``the gate rejected quantize:int8: its accuracy 0.8 against the original's 0.97 is worse by 0.17, more than
    the gate's maxDrop 0.01 (absolute), and onFail is Block``; the summary's message when numbers are missing."""
    s, gate = report.summary, report.gate
    max_drop = gate.get("maxDrop")
    if s.candidate is None or None in (s.value, s.baseline, s.drop) or not isinstance(max_drop, int | float):
        return s.message or "the gate blocked the result"
    metric = s.metric_name or "metric"
    who = f"the gate rejected {s.candidate}"
    if report.strategy == "Auto":
        who = f"no candidate passed the gate (its pick was {s.candidate})"
    return (
        f"{who}: its {metric} {fmt(s.value)} against the original model's {fmt(s.baseline)} is worse by "
        f"{fmt(s.drop)}, more than the gate's maxDrop {fmt(float(max_drop))} ({gate.get('dropType', 'absolute')}), "
        f"and onFail is {gate.get('onFail', 'Block')}"
    )


def table(report: Report) -> Any:
    """A rich Table: the baseline, then every step or candidate, with the shipped one marked."""
    from rich.table import Table

    s = report.summary
    metric = s.metric_name or "metric"
    t = Table(title=table_title(report), title_justify="left")
    for col, justify in (
        ("", "left"),
        ("variant", "left"),
        ("params", "right"),
        ("nonzero", "right"),
        ("raw KiB", "right"),
        ("gzip KiB", "right"),
        ("ratio", "right"),
        (metric, "right"),
        ("drop", "right"),
        ("p50 ms", "right"),
        ("p95 ms", "right"),
        ("gate", "left"),
    ):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    base_gz = report.baseline.gzip_bytes

    def row(mark: str, name: str, m: Measurement, gate: str) -> None:
        ratio = f"{base_gz / m.gzip_bytes:.1f}x" if base_gz and m.gzip_bytes else "-"
        t.add_row(
            mark,
            name,
            "-" if m.params is None else f"{m.params:,}",
            _nz(m),
            _kb(m.raw_bytes),
            _kb(m.gzip_bytes),
            ratio,
            fmt(m.metric),
            fmt(m.drop),
            fmt(m.latency_p50_ms),
            fmt(m.latency_p95_ms),
            gate,
        )

    row("", "baseline (float32)", report.baseline, "")
    for step in report.steps:
        mark = "*" if step.shipped else ""
        if step.error:
            t.add_row(mark, step.name, *["-"] * 9, "error")
            continue
        if step.skipped and step.measurement.gzip_bytes is None:
            t.add_row(mark, step.name, *["-"] * 9, "skipped")
            continue
        gate = {True: "pass", False: "FAIL", None: "-"}[step.passed]
        row(mark, step.name, step.measurement, gate)
    t.caption = s.message or ""
    return t


def print_report(report: Report, file: Any = None) -> None:
    from rich.console import Console

    console = Console(file=file)
    if not console.is_terminal:
        console = Console(file=file, width=160)
    console.print(table(report))
    for warning in report.calibration_warnings:
        console.print(f"[yellow]calibration:[/] {warning}", highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, markup=False)


def plot(report: Report, path: Path) -> None:
    """Scatter of gzip size (x, log scale) against the metric (y) for the baseline and every variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: list[tuple[str, Measurement, bool]] = [("baseline", report.baseline, False)]
    points += [(s.name, s.measurement, s.shipped) for s in report.steps]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, m, chosen in points:
        if m.gzip_bytes is None or m.metric is None:
            continue
        color = "tab:green" if chosen else ("tab:gray" if name == "baseline" else "tab:blue")
        ax.scatter([m.gzip_bytes / 1024], [m.metric], color=color, s=60 if chosen else 30, zorder=3)
        ax.annotate(name, (m.gzip_bytes / 1024, m.metric), textcoords="offset points", xytext=(4, 4), fontsize=8)
    base = report.summary.baseline
    gate = report.gate
    if base is not None and gate.get("dropType") == "absolute" and isinstance(gate.get("maxDrop"), float):
        lower_better = report.summary.metric_name in ("mse", "mae")
        limit = base + float(gate["maxDrop"]) if lower_better else base - float(gate["maxDrop"])
        ax.axhline(limit, color="tab:red", linestyle="--", linewidth=1, label="gate")
        ax.legend(loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("gzip -9 size (KiB, log)")
    ax.set_ylabel(report.summary.metric_name or "metric")
    ax.set_title("size vs metric per candidate")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
