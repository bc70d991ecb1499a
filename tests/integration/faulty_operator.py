"""``python -m tests.integration.faulty_operator operator ...``: the real operator with one fault planted, for the
tests of loud failures. The build Job's manifest builder raises ValueError for a ModelDeployment annotated
``modelship.io/test-builder-error`` (the annotation's value is the error), as a builder does for a spec it cannot
express; every other ModelDeployment is reconciled as usual."""

from __future__ import annotations

from typing import Any

from modelship.api.modeldeployment import ModelDeployment
from modelship.cli import main
from modelship.controller.stages import build as build_stage

FAULT_ANNOTATION = "modelship.io/test-builder-error"
_build_job = build_stage.build_job


def faulty_build_job(md: ModelDeployment, *args: Any, **kwargs: Any) -> dict[str, Any]:
    error = md.metadata.annotations.get(FAULT_ANNOTATION)
    if error:
        raise ValueError(error)
    return _build_job(md, *args, **kwargs)


if __name__ == "__main__":
    build_stage.build_job = faulty_build_job
    raise SystemExit(main())
