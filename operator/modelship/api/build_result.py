"""The build Job's result: one line of JSON in the build container's termination message (the contract between
the build Job and the operator, as ``report.Summary`` is the optimizer's).

BuildKit's shell wrapper writes ``{"ok":true,"image":"repo@sha256:...","digest":"sha256:...","platforms":[...]}``;
Kaniko writes only the bare digest (``--digest-file=/dev/termination-log``), which
``BuildResult.from_termination_message`` completes from the repository and platforms the operator asked for.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import Field, ValidationError, model_validator

from .common import ApiModel
from .errors import describe_validation_error
from .report import TERMINATION_MESSAGE_LIMIT

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
_DIGEST = re.compile(DIGEST_PATTERN)


def in_repository(image: str, repository: str) -> bool:
    """``image`` is ``<repository>@sha256:<64 hex>``: the only images a ModelDeployment deploys."""
    return re.fullmatch(re.escape(repository) + "@" + DIGEST_PATTERN.strip("^$"), image) is not None


class BuildResult(ApiModel):
    """What the build Job pushed (or why it failed)."""

    ok: bool
    """false when the build failed (error says why)."""
    image: str | None = None
    """The pushed image by digest: repository@sha256:..."""
    digest: Annotated[str, Field(pattern=DIGEST_PATTERN)] | None = None
    """Digest of the pushed manifest (the image index for a multi-platform image)."""
    platforms: list[str] = Field(default_factory=list)
    """Platforms in the pushed image, e.g. [linux/amd64, linux/arm64]."""
    error: Annotated[str, Field(max_length=1024)] | None = None
    """Readable error when ok is false."""

    @model_validator(mode="after")
    def _consistent(self) -> BuildResult:
        if self.ok:
            if not self.image or not self.digest:
                raise ValueError("a successful build result needs image and digest")
            if not self.image.endswith("@" + self.digest):
                raise ValueError(f"image {self.image!r} does not end with its digest {self.digest}")
        return self

    @property
    def repository(self) -> str | None:
        return self.image.rsplit("@", 1)[0] if self.image else None

    def to_line(self) -> str:
        """Compact JSON on one line, within the termination-message limit (a long error is cut)."""
        data = self.wire()
        line = json.dumps(data, separators=(",", ":"), sort_keys=True)
        if len(line.encode()) > TERMINATION_MESSAGE_LIMIT and "error" in data:
            data["error"] = data["error"][:200]
            line = json.dumps(data, separators=(",", ":"), sort_keys=True)
        if len(line.encode()) > TERMINATION_MESSAGE_LIMIT:
            raise ValueError("build result does not fit the termination message")
        return line

    @classmethod
    def from_line(cls, text: str) -> BuildResult:
        """Parse the JSON line; raises ValueError with a readable reason when it is not a build result."""
        text = text.strip()
        if not text:
            raise ValueError("the build wrote no result (empty termination message)")
        if not text.startswith("{"):
            # FallbackToLogsOnError: a failed build leaves the tail of its log here
            last = text.splitlines()[-1].strip()
            raise ValueError(f"the build wrote no result; its log ends with: {last[:300]}")
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ValueError(f"the build's result is not valid: {describe_validation_error(exc)}") from None

    @classmethod
    def from_termination_message(cls, text: str, repository: str, platforms: list[str]) -> BuildResult:
        """Either engine's message: BuildKit's JSON line, or Kaniko's bare digest (completed from the
        repository and platforms the Job was built for)."""
        stripped = text.strip()
        if _DIGEST.match(stripped):
            return cls(ok=True, image=f"{repository}@{stripped}", digest=stripped, platforms=list(platforms))
        return cls.from_line(text)
