"""The postillion exception hierarchy.

Owns: every exception type that crosses a module boundary.
Must not import: anything from postillion (this is the bottom layer).

Errors are either temporary (the client may retry: 4xx) or permanent (5xx); the
default is permanent.  Turning an error into an SMTP reply happens in one place,
``replies.reply_for``.
"""

from __future__ import annotations

from pathlib import Path


class PostillionError(Exception):
    """Base class.  ``temporary`` says whether a retry might succeed."""

    temporary: bool = False


class ProtocolError(PostillionError):
    """The peer broke the protocol."""


class AuthBackendError(PostillionError):
    """The authentication backend could not be asked (socket missing, refused, timed out).

    ``detail`` is for the log only (it may name paths); clients see a generic text.
    """

    temporary = True

    def __init__(self, detail: str, *, log_line: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        # The whole warning when the backend has its own Postfix text (Dovecot's
        # "SASL: Connect to private/auth failed: ..."), instead of "SASL authentication
        # failure: <detail>" (what Cyrus logs through Postfix).
        self.log_line = log_line


class AuthRejected(PostillionError):
    """The backend said no and gave a reason the client may see (Dovecot's ``reason=``);
    a verifier raises it instead of returning False."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TableLookupError(PostillionError):
    """A lookup table could not be read; callers answer 451 4.3.0 Temporary lookup failure."""

    temporary = True


class QueueWriteError(PostillionError):
    """A message could not be written durably to the queue."""

    temporary = True


class ConfigError(PostillionError):
    """A configuration problem, reported as ``file:line: name: what is wrong; fix``."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        lineno: int | None = None,
        name: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.lineno = lineno
        self.name = name
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.path is not None:
            where = str(self.path)
            if self.lineno is not None:
                where += f":{self.lineno}"
            where += ": "
        name = f"{self.name}: " if self.name else ""
        fix = f"; {self.fix}" if self.fix else ""
        return f"{where}{name}{self.message}{fix}"
