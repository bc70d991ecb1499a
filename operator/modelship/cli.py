"""The `modelship` command: one entry point, a subcommand per job.

Subcommands register themselves from their packages (``<package>.cli.register``) and import their heavy
dependencies (TensorFlow, LiteRT, docker) only when run, so `modelship crd` starts in a blink and the
operator image needs none of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

# subcommand packages, in help order; each has a cli module with register(subparsers)
_PLUGINS = (
    "modelship.commands",  # crd, render
    "modelship.optimize.cli",
    "modelship.sources.cli",  # push, pull
    "modelship.build.cli",
    "modelship.serve.cli",
    "modelship.controller.cli",
)


class CliError(Exception):
    """An error to print as one line (no traceback) with exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelship",
        description="Optimize a TensorFlow/Keras model behind an accuracy gate, build it into an image, serve it.",
    )
    parser.add_argument("--version", action="version", version=f"modelship {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
                continue  # that part is not installed in this image
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"modelship {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # ctrl-C: say so (a silent exit 130 left a build's user guessing)
        print(f"modelship {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
