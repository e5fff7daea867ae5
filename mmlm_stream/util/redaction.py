"""Credentials out of everything the service shows or writes (contract §7).

Why: camera URLs carry passwords (``rtsp://admin:secret@cam/...``) and FFmpeg, Ray and our
own messages repeat URLs verbatim. Every response, record, file and log line goes through
``redact_url``/``redact_text``; ``install`` redacts each log record of the process as it is
made, whichever logger or handler (Ray's included) later writes it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query keys whose values are secrets (SRT passphrases, signed-URL tokens, API keys).
SECRET_KEYS = re.compile(r"pass|secret|token|key|auth|sig|credential", re.IGNORECASE)
# scheme://userinfo@ with no '/', whitespace or '@' inside the userinfo: linear to scan.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]{0,31}://)[^\s/@?#\"'<>]{1,512}@")
_SECRET_QUERY = re.compile(
    r"([?&;](?:[A-Za-z0-9_.-]{0,40})(?:pass|secret|token|key|auth|sig|credential)"
    r"[A-Za-z0-9_.-]{0,40}=)[^&\s\"'<>#]{1,2048}",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """``url`` with its user and password replaced by ``***`` and secret query values
    masked; anything that does not parse as a URL goes through ``redact_text``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return redact_text(url)
    if not parts.scheme or not parts.netloc:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query and SECRET_KEYS.search(query):
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(key, MASK if SECRET_KEYS.search(key) else value) for key, value in pairs], safe="*"
        )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """Every URL's credentials in free text (a log line, an FFmpeg error) masked."""
    if "@" in text:
        text = _USERINFO.sub(rf"\g<1>{MASK}@", text)
    if "=" in text:
        text = _SECRET_QUERY.sub(rf"\g<1>{MASK}", text)
    return text


class _Redacting:
    """A log record factory that redacts the message (arguments merged in) and the
    traceback text before any handler sees the record."""

    def __init__(self, inner: logging._LogRecordFactory) -> None:  # type: ignore[name-defined]
        self.inner = inner

    def __call__(self, *args: object, **kwargs: object) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is logging's problem to report, not ours
            return record
        redacted = redact_text(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return record


def install() -> None:
    """Redact every log record this process makes from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _Redacting):
        logging.setLogRecordFactory(_Redacting(factory))
