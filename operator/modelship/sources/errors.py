"""The one error a source raises: a readable message, and whether it is temporary."""

from __future__ import annotations


class FetchError(Exception):
    """A URI could not be resolved or downloaded; ``str(exc)`` is meant for people.

    ``temporary`` is True only for failures that may pass on their own (a server that does not answer, a timeout,
    a truncated download, HTTP 408/425/429/5xx): the optimizer reports them as ``FailureKind.TEMPORARY`` and the
    operator retries the Job with backoff. Everything else (a missing object, refused credentials, a digest
    mismatch, an untrusted certificate, hostile content) is permanent: the same input fails the same way.
    """

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary

    def prefixed(self, prefix: str) -> FetchError:
        """The same error with ``prefix: `` in front (the spec field it is about)."""
        return FetchError(f"{prefix}: {self}", temporary=self.temporary)
