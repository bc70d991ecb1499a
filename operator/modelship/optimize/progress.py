"""Progress: rich progress bars on a terminal, plain log lines otherwise (a Job's log, CI, a pipe)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO


class Task:
    """One bar (a step or a candidate): advance it, then finish it with a one-line result."""

    def __init__(self, progress: Progress, label: str, total: int, key: Any) -> None:
        self._progress = progress
        self.label = label
        self.total = max(1, total)
        self._key = key
        self._done = 0
        self._started = time.monotonic()

    def advance(self, detail: str | None = None, amount: int = 1) -> None:
        self._done = min(self.total, self._done + amount)
        self._progress._update(self, detail)

    def finish(self, result: str) -> None:
        self._done = self.total
        self._progress._finish(self, result, time.monotonic() - self._started)


class Progress:
    """Reports what the optimizer is doing, to stderr by default.

    On a TTY it draws a rich bar per step or candidate (on stderr); elsewhere it writes one line per event to
    stdout, so a Pod's log reads as a plain record and stderr holds only errors.
    """

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, enabled: bool = True) -> None:
        if stream is None:
            # bars on the terminal's stderr; plain lines go to stdout, so stderr carries only errors and warnings
            stream = sys.stderr if sys.stderr.isatty() else sys.stdout
        self.stream = stream
        self.enabled = enabled
        self.tty = self.stream.isatty() if tty is None else tty
        self._rich: Any = None

    def __enter__(self) -> Progress:
        if self.enabled and self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._rich.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._rich is not None:
            self._rich.__exit__(exc_type, exc, tb)
            self._rich = None

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.console.print(message, markup=False, highlight=False)
        else:
            print(f"[modelship] {message}", file=self.stream, flush=True)

    def task(self, label: str, total: int = 1) -> Task:
        key = None
        if self.enabled and self._rich is not None:
            key = self._rich.add_task(label, total=max(1, total), detail="")
        elif self.enabled:
            print(f"[modelship] {label} ...", file=self.stream, flush=True)
        return Task(self, label, total, key)

    def _update(self, task: Task, detail: str | None) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(task._key, completed=task._done, detail=detail or "")
        elif detail:
            print(f"[modelship] {task.label}: {detail}", file=self.stream, flush=True)

    def _finish(self, task: Task, result: str, seconds: float) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(task._key, completed=task.total, detail=result)
        else:
            print(f"[modelship] {task.label}: {result} ({seconds:.1f}s)", file=self.stream, flush=True)
