"""tests/e2e/conftest.py's report hook, run by pytester on a module whose module-scoped fixture fails: the error
(and the diagnosis it carries) is reported in full once, the module's other tests say it in two lines; a failed
test names the running operator's log file."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
QUIET = ("-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function")


@pytest.mark.parametrize("ci", ["", "true"], ids=["terminal", "ci"])
def test_a_module_fixture_error_is_reported_in_full_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    # With $CI set, pytest prints each short-summary message whole (not cut to the terminal's width)
    monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    pytester.makeconftest("from tests.e2e.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(test_m='''
import pytest

@pytest.fixture(scope="module")
def deployed():
    raise TimeoutError("x not all Ready after 600.0s\\n--- diagnosis: THE-" + "DIAGNOSIS ---")

def test_a(deployed): pass
def test_b(deployed): pass
def test_c(deployed): pass
''')
    result = pytester.runpytest_inprocess(*QUIET)
    result.assert_outcomes(errors=3)
    out = result.stdout.str()
    assert out.count("THE-DIAGNOSIS") == 1, out
    assert "ERROR test_m.py::test_a - TimeoutError: x not all Ready after 600.0s" in out.splitlines(), out
    for test in ("test_b", "test_c"):
        result.stdout.fnmatch_lines([f"*ERROR at setup of {test}*", "TimeoutError: x not all Ready after 600.0s",
                                     "(the same error as in the setup of test_m.py::test_a: see it there)"])


def test_a_failed_tests_diagnosis_is_printed_once_on_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")  # pytest prints each short-summary message whole
    pytester.makeconftest("from tests.e2e.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(test_m='''
def test_waits():
    assert False, "never 3 Ready pods\\n--- diagnosis: THE-" + "DIAGNOSIS ---"
''')
    result = pytester.runpytest_inprocess(*QUIET)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert out.count("THE-DIAGNOSIS") == 1, out
    assert "FAILED test_m.py::test_waits - AssertionError: never 3 Ready pods" in out.splitlines(), out


def test_a_failed_test_names_the_running_operators_log(pytester: pytest.Pytester) -> None:
    from modelship_dev import node_demo as demo

    class Op(demo.ChartOperator):
        def __init__(self) -> None:
            self.log = Path("/cache/demo/operator-test_m.log")

    pytester.makeconftest("from tests.e2e.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(test_m="def test_fails(): assert False\ndef test_passes(): pass\n")
    demo.running(Op())
    try:
        result = pytester.runpytest_inprocess(*QUIET)
    finally:
        demo.running(None)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*modelship operator*", "its log is saved to /cache/demo/operator-test_m.log *"])
