"""tfenv.load's error when the TensorFlow stack does not import: which module is missing, or why it failed."""

from __future__ import annotations

import builtins
from typing import Any

import pytest

from modelship.optimize import tfenv
from modelship.optimize.errors import OptimizeError

_real_import = builtins.__import__


def _failing_import(error: ImportError) -> Any:
    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "tensorflow":
            raise error
        return _real_import(name, *args, **kwargs)

    return fake


@pytest.fixture
def unloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tfenv, "_LOADED", None)
    monkeypatch.setenv("MODELSHIP_DEBUG", "1")  # leave file descriptor 2 alone


def test_a_missing_module_is_named_with_the_install_hint(unloaded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtins, "__import__", _failing_import(ModuleNotFoundError("no", name="tensorflow")))
    with pytest.raises(OptimizeError, match=r"\(tensorflow is missing\): pip install 'modelship\[optimize\]'"):
        tfenv.load()


def test_an_import_that_fails_inside_tensorflow_says_why(unloaded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorFlow raises a name-less ImportError (its native runtime's, or after an interrupted import): before,
    the message said '(None is missing): pip install ...' of a package that is installed."""
    error = ImportError(
        'Traceback (most recent call last):\n  File "pywrap_tensorflow.py", line 73, in <module>\n'
        "ImportError: libtensorflow_framework.so.2: cannot open shared object file\n\n"
        "Failed to load the native TensorFlow runtime."
    )
    monkeypatch.setattr(builtins, "__import__", _failing_import(error))
    with pytest.raises(OptimizeError) as raised:
        tfenv.load()
    message = str(raised.value)
    assert message == (
        "TensorFlow is installed but failed to import: "
        "ImportError: libtensorflow_framework.so.2: cannot open shared object file"
    )
    assert "None" not in message and "pip install" not in message
