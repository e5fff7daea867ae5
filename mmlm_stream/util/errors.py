"""Typed errors whose message is one line that names the input and the reason.

The CLI prints ``str(error)`` and nothing else unless ``--debug`` is given, so every
message here must stand on its own.
"""

from __future__ import annotations

from mmlm_stream.util.redaction import redact_text, redact_url


class MmlmError(Exception):
    """Base class of every error the user is meant to read."""


class SourceError(MmlmError):
    """A video source could not be opened or read. ``permanent``: trying again soon cannot
    help (not found, unauthorised, nothing decodable), so a live stream is ``failed``, not
    ``reconnecting``."""

    def __init__(self, source: str, reason: str, *, permanent: bool = False) -> None:
        self.source = redact_url(source)  # messages travel to logs, files and API clients
        self.reason = redact_text(reason)
        self.permanent = permanent
        super().__init__(f"{self.source}: {self.reason}")


class ConfigError(MmlmError):
    """The configuration (file, environment or flags) is invalid."""
