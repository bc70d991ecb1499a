"""libmsjson under AddressSanitizer and UndefinedBehaviorSanitizer on hostile bodies: native/msjson/fuzz builds
its driver (native/msjson/fuzz.cpp, cached by the sources' hash) and runs it over a fixed seed corpus (built-in
bodies, native/msjson/fuzz-corpus/: each a body that once made a sanitizer report or broke an invariant), every
truncation and one-byte deletion of them, bodies of 0..130 bytes around the scanner's 64-byte steps, deep nesting,
runs of commas, bodies of float32 rounding boundaries and their neighbours, then a fixed number of random mutations.
Any report, or a broken invariant the Python side relies on (spans inside the body, counts no larger than it, a split
inside its span, the two-thread read equal to the one-thread one, an FP32 read equal bit for bit to float32 of the
FP64 read, which only the exact path makes: the FP32 fast path against it), fails the test with the report and the
body. A fast path without its margin check fails here (checked by hand: a driver built with -DMSJSON_F32_MARGIN=0
broke the FP32 invariant after 61833 bodies). Before the bodies, msjson_quantize runs on random float32 arrays (NaN,
infinities, subnormals, ties; unaligned; every kind, zero points up to and past its bound), each value checked
against a plain double reference, out-of-range float -> int conversions caught by UBSan.
Long runs: ``native/msjson/fuzz --seconds 600 --seed N``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow

FUZZ = REPO / "native" / "msjson" / "fuzz"
CORPUS = REPO / "native" / "msjson" / "fuzz-corpus"
#: random mutations after the fixed passes (~5 s): ~10 s more under the sanitizers on one core
MUTATIONS = 100_000


def _require_compiler() -> None:
    """Skip without g++, except in CI, where hack/setup installs it (libmsjson's own build needs it)."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        if os.environ.get("CI"):
            pytest.fail("no g++ in CI (hack/setup installs it for libmsjson)")
        pytest.skip("no g++")


def test_the_corpus_holds_regression_bodies() -> None:
    bodies = sorted(CORPUS.glob("*.json"))
    assert len(bodies) >= 3, bodies
    assert all(b.stat().st_size > 0 for b in bodies)


def test_hostile_bodies_raise_no_sanitizer_report(tmp_path: Path) -> None:
    _require_compiler()
    build = subprocess.run([str(FUZZ), "--build-only"], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    driver = build.stdout.strip().splitlines()[-1]
    crash = tmp_path / "crash.json"
    run = subprocess.run(
        [driver, "--seed", "20261129", "--mutations", str(MUTATIONS), "--crash", str(crash)]
        + [str(p) for p in sorted(CORPUS.glob("*.json"))],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    body = crash.read_bytes()[:2000] if crash.exists() else b"(none written)"
    assert run.returncode == 0, f"{run.stderr[-6000:]}\nthe body (first 2000 bytes): {body!r}"
    assert "no report" in run.stdout, run.stdout
    ran = int(run.stdout.split("msjson-fuzz: ")[1].split()[0])
    assert ran > MUTATIONS, run.stdout
    # msjson_quantize too: random float32 arrays against a plain reference, under the same sanitizers
    quantized = int(run.stdout.split(" quantized arrays")[0].split()[-1])
    assert quantized > MUTATIONS // 10, run.stdout
    # FP32 values read and compared with the exact path's (3000 bodies of float32 boundaries alone hold ~90000)
    checked = int(run.stdout.split(" FP32 values checked")[0].split()[-1])
    assert checked > 50_000, run.stdout
