"""Readable one-line messages for validation errors: the field path as on the wire, then what is wrong."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic.alias_generators import to_camel


def _path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item.startswith(("function-", "tagged-union", "union")) or "[" in item:
            continue
        else:
            parts.append(("." if parts else "") + (item if item[:1].islower() and "_" not in item else to_camel(item)))
    return "".join(parts)


def describe_validation_error(exc: ValidationError) -> str:
    """'spec.serving.replicas: Input should be greater than or equal to 0' (first error, plus a count)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = _path(tuple(first["loc"]))
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        # rule messages name their own sub-field ("maxReplicas: ..."): join it onto the path
        if ": " in msg and " " not in msg.split(": ", 1)[0]:
            sub, msg = msg.split(": ", 1)
            path = f"{path}.{sub}" if path else sub
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {msg}{more}" if path else f"{msg}{more}"
