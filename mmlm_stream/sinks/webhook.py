"""Webhook sink: a signed POST of each event's JSON to one URL.

The URL passes the service's URL policy (``security/url_policy.py``: ``api.allowed_hosts``,
``api.allow_internal``) on every delivery, and the request goes to the address that check
returned, so a name that starts resolving to an internal address is refused, never
connected to. Redirects are not followed.

Headers: ``X-Mmlm-Event-Id``, ``X-Mmlm-Timestamp`` (Unix seconds) and, with a secret,
``X-Mmlm-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``. A receiver checks
the signature (``verify``), refuses timestamps older than a few minutes (a replayed request
keeps its old timestamp, and changing it breaks the signature) and ignores an event id it
has already handled (delivery is at-least-once).

Outcomes: 2xx delivered; 408, 425, 429 and 5xx failed (retried, then dead-lettered); any
other status failed for good; no connection at all (refused, unreachable, a name that does
not resolve, also when the sink starts): the far side is down, waited out.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import socket
import ssl
import time
from urllib.parse import urlsplit

from mmlm_stream import __version__
from mmlm_stream.config.sinks import WebhookSinkConfig
from mmlm_stream.records.schema import EventRecord
from mmlm_stream.security.url_policy import UrlPolicy, UrlRefused
from mmlm_stream.sinks.base import DeliveryFailed, FarSideDown, Sink
from mmlm_stream.util.redaction import redact_url

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Mmlm-Signature"
TIMESTAMP_HEADER = "X-Mmlm-Timestamp"
EVENT_ID_HEADER = "X-Mmlm-Event-Id"
RETRIED_STATUSES = frozenset({408, 425, 429})
_MAX_REPLY = 64 * 1024


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """A receiver's check: the signature matches and the timestamp is recent."""
    try:
        age = (time.time() if now is None else now) - float(timestamp)
    except ValueError:
        return False
    if abs(age) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the checked address; the Host header keeps the URL's name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to the checked address, with the URL's name for SNI and the certificate."""

    def __init__(
        self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


class WebhookSink(Sink):
    def __init__(self, name: str, config: WebhookSinkConfig, policy: UrlPolicy) -> None:
        self.name = name
        self.config = config
        self.policy = UrlPolicy(
            schemes=frozenset({"http", "https"}),
            allowed_hosts=policy.allowed_hosts,
            allow_internal=policy.allow_internal,
            verify_tls=policy.verify_tls,
            resolve=policy.resolve,
        )
        self.shown = redact_url(config.url)
        self.key = config.key()
        try:
            self.policy.check(config.url)  # refused now: a one-line config error at start
        except UrlRefused as exc:
            if not _unresolved(exc):
                raise
            logger.warning("sink %s: %s; delivering once it resolves", name, exc.logged)
        self._context = ssl.create_default_context()
        if not self.policy.verify_tls:
            self._context.check_hostname = False
            self._context.verify_mode = ssl.CERT_NONE
        self._user_agent = f"mmlm-stream/{__version__}"

    def _connection(self) -> tuple[http.client.HTTPConnection, str]:
        try:
            target = self.policy.check(self.config.url)
        except UrlRefused as exc:
            if _unresolved(exc):  # DNS is down or the name is not there yet: wait
                raise FarSideDown(f"{self.shown}: {exc.detail}") from None
            raise DeliveryFailed(f"{self.shown}: {exc.detail}") from None
        parts = urlsplit(self.config.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        timeout = self.config.timeout_s
        if target.scheme == "https":
            port = target.port or 443
            conn: http.client.HTTPConnection = _PinnedHTTPS(
                target.host, port, target.address, timeout, self._context
            )
        else:
            conn = _PinnedHTTP(target.host, target.port or 80, target.address, timeout)
        return conn, path

    def headers(self, event: EventRecord, body: bytes) -> dict[str, str]:
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            EVENT_ID_HEADER: event.id,
            TIMESTAMP_HEADER: stamp,
        }
        if self.key:
            headers[SIGNATURE_HEADER] = sign(self.key, stamp, body)
        headers.update({k: v.get_secret_value() for k, v in self.config.headers.items()})
        return headers

    def deliver(self, event: EventRecord) -> None:
        body = event.to_json().encode()
        conn, path = self._connection()
        try:
            try:
                conn.connect()
            except (OSError, ssl.SSLError) as exc:
                raise FarSideDown(f"{self.shown}: {_reason(exc)}") from None
            try:
                conn.request("POST", path, body=body, headers=self.headers(event, body))
                reply = conn.getresponse()
                reply.read(_MAX_REPLY)
            except (OSError, http.client.HTTPException) as exc:
                raise DeliveryFailed(f"{self.shown}: {_reason(exc)}") from None
        finally:
            conn.close()
        status = reply.status
        if 200 <= status < 300:
            return
        permanent = not (status >= 500 or status in RETRIED_STATUSES)
        detail = " (redirects are not followed)" if 300 <= status < 400 else ""
        raise DeliveryFailed(f"{self.shown}: HTTP {status}{detail}", permanent=permanent)


def _unresolved(exc: UrlRefused) -> bool:
    return "does not resolve" in exc.detail


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
