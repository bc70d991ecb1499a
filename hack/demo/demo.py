#!/usr/bin/env python3
"""`make demo`: thin wrapper over modelship_dev.node_demo (the real-node demo driver, dev-only code)."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from modelship_dev.node_demo import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
