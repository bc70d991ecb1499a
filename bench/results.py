"""What every benchmark here shares: the machine line and appending a section to bench/RESULTS.md."""

from __future__ import annotations

import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\nEach benchmark appends its own section; numbers are from shared, noisy "
    "machines, so compare ratios measured in the same run.\n"
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def append_section(text: str, path: Path | str = RESULTS) -> Path:
    """Append one section (markdown starting with a ## heading) to the results file, creating it when missing."""
    path = Path(path)
    if not path.exists():
        path.write_text(HEADER)
    with path.open("a") as f:
        f.write("\n" + text.strip("\n") + "\n")
    print(f"appended to {path}")
    return path


def publish(text: str, append: bool = True) -> None:
    """Print a benchmark's section and, unless told not to (--no-append), append it to the results file."""
    print("\n" + text)
    if append:
        append_section(text)
