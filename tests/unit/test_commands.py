"""`modelship render -f FILE`: what is not a ModelDeployment file is one line naming the file, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelship.cli import main


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89HDF\r\n\x1a\n\x00\x00", "not a text file (expected ModelDeployment YAML)"),  # a model, not its spec
        (b'{"steps": []}', "document 1 has no kind, not a ModelDeployment"),
        (b"kind: Deployment\n", "document 1 is 'Deployment', not a ModelDeployment"),
    ],
)
def test_a_file_that_is_not_a_modeldeployment_is_one_line(
    tmp_path: Path, content: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "input"
    path.write_bytes(content)
    assert main(["render", "-f", str(path)]) == 1
    assert capsys.readouterr().err == f"modelship render: error: {path}: {message}\n"
