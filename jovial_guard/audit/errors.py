"""Audit errors: a log that does not verify, and a write that could not be made durable."""

from __future__ import annotations

from ..errors import MalformedInput, Unavailable


class LogVerificationFailed(MalformedInput):
    """The log does not verify; ``record`` is the first bad record (1-based sequence).

    The writer raises the same error (as :data:`LogCorrupted`) when the log it is asked to
    append to fails to verify anywhere but a torn tail.
    """

    def __init__(self, reason: str, *, record: int | None = None, file: str | None = None,
                 line: int | None = None, checkpoint: int | None = None) -> None:
        self.reason = reason
        self.record = record
        self.file = file
        self.line = line
        self.checkpoint = checkpoint
        where = []
        if record is not None:
            where.append(f"first bad record: {record}")
        if file is not None:
            where.append(f"{file}" + (f" line {line}" if line is not None else ""))
        if checkpoint is not None:
            where.append(f"checkpoint #{checkpoint}")
        super().__init__(f"{reason} ({'; '.join(where)})" if where else reason)


#: The writer's name for a log that does not verify somewhere other than a torn tail.
LogCorrupted = LogVerificationFailed


class AuditWriteFailed(Unavailable):
    """A batch could not be made durable; none of it is acknowledged (senders retry)."""


__all__ = ["AuditWriteFailed", "LogCorrupted", "LogVerificationFailed"]
