"""The TFLite runner's direct writes into input tensors (``_TFLiteRunner.run_parts``), and the models that must not
take them: a BYTES (string) input has no writable numeric view, so its requests go through ``set_tensor``."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelship.serve.model import ServedModel, _TFLiteRunner
from modelship.serve.tensors import Array, TensorSpec


class StringInterpreter:
    """An interpreter of a model ``lengths = len(text)`` over a batch of strings: ``set_tensor`` takes an object
    array; a view of the string tensor (``tensor``) is refused, as numpy cannot write numbers into it."""

    def __init__(self) -> None:
        self.inputs: dict[int, Array] = {}
        self.views = 0

    def resize_tensor_input(self, index: int, shape: list[int], strict: bool = False) -> None:
        pass

    def allocate_tensors(self) -> None:
        pass

    def tensor(self, index: int) -> Any:
        self.views += 1
        raise ValueError("a string tensor has no numeric view to write into")

    def set_tensor(self, index: int, value: Array) -> None:
        assert value.dtype == np.object_ and all(isinstance(v, bytes) for v in value.flat)  # padded with b""
        self.inputs[index] = value

    def invoke(self) -> None:
        pass

    def get_tensor(self, index: int) -> Array:
        return np.array([len(v) for v in self.inputs[0]], dtype=np.int32)


class StringModel(ServedModel):
    """The runner's view of a batchable TFLite model with one BYTES input (text) and one INT32 output."""

    def __init__(self) -> None:
        super().__init__(
            "strings",
            "1",
            [TensorSpec("text", "BYTES", (-1,))],
            [TensorSpec("lengths", "INT32", (-1,))],
            batchable=True,
            path="",
        )
        self.input_index = {"text": 0}
        self.output_index = {"lengths": 1}
        self.default_shapes = {0: (-1,)}
        self.interpreters: list[StringInterpreter] = []

    def new_interpreter(self, threads: int) -> StringInterpreter:
        self.interpreters.append(StringInterpreter())
        return self.interpreters[-1]

    def create_runner(self, threads: int, max_batch_size: int) -> _TFLiteRunner:
        return _TFLiteRunner(self, threads, max_batch_size)  # type: ignore[arg-type]


def _text(*words: bytes) -> dict[str, Array]:
    out = np.empty(len(words), dtype=np.object_)
    out[:] = list(words)
    return {"text": out}


def test_a_model_with_a_string_input_runs_lone_and_coalesced_requests_through_set_tensor() -> None:
    model = StringModel()
    runner = model.create_runner(1, 8)
    lone = runner.run_parts(model, [_text(b"abc", b"de")], [2])
    np.testing.assert_array_equal(lone["lengths"], [3, 2])
    both = runner.run_parts(model, [_text(b"a"), _text(b"bcd", b"")], [1, 2])
    np.testing.assert_array_equal(both["lengths"], [1, 3, 0])
    assert sum(i.views for i in model.interpreters) == 0  # never a direct write into a string tensor
