"""Progress output: plain lines off a terminal, rich bars on one; the report table renders."""

from __future__ import annotations

import io

from modelship.api.report import Measurement, Report, StepReport, Summary
from modelship.optimize import render
from modelship.optimize.progress import Progress


def test_plain_lines_when_not_a_tty() -> None:
    out = io.StringIO()
    with Progress(out, tty=False) as p:
        p.log("fetching m.h5")
        task = p.task("step 1/2 prune", total=3)
        task.advance("epoch 1/2")
        task.finish("accuracy 0.97")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[modelship] fetching m.h5"
    assert lines[1] == "[modelship] step 1/2 prune ..."
    assert lines[2] == "[modelship] step 1/2 prune: epoch 1/2"
    assert lines[3].startswith("[modelship] step 1/2 prune: accuracy 0.97 (") and lines[3].endswith("s)")


def test_rich_bars_on_a_tty() -> None:
    out = io.StringIO()
    with Progress(out, tty=True) as p:
        task = p.task("candidate 1/3 int8", total=2)
        task.advance("converted")
        task.finish("accuracy 0.97 (drop 0, passes)")
        p.log("done")
    text = out.getvalue()
    assert "candidate 1/3 int8" in text and "accuracy 0.97" in text and "[modelship]" not in text


def test_disabled_progress_is_silent() -> None:
    out = io.StringIO()
    with Progress(out, enabled=False) as p:
        p.task("x").finish("y")
        p.log("z")
    assert out.getvalue() == ""


def test_table_marks_the_shipped_variant() -> None:
    m = Measurement(params=100, nonzero_params=20, raw_bytes=4096, gzip_bytes=1024, metric=0.97, drop=0.001)
    report = Report(
        summary=Summary(ok=True, metric_name="accuracy", candidate="prune+int8", artifact="model.tflite", message="ok"),
        baseline=Measurement(params=100, nonzero_params=100, raw_bytes=16384, gzip_bytes=8192, metric=0.971),
        steps=[
            StepReport(name="prune", measurement=m, passed=True),
            StepReport(name="quantize:int8", measurement=m, passed=True, shipped=True),
            StepReport(name="qat", error="boom"),
        ],
        strategy="Steps",
    )
    out = io.StringIO()
    render.print_report(report, out)
    rows = [line for line in out.getvalue().splitlines() if "quantize:int8" in line or "prune " in line]
    assert any("*" in r and "quantize:int8" in r and "8.0x" in r and "20%" in r for r in rows)
    assert "error" in out.getvalue()
