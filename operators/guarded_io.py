"""FFmpeg's every open of an untrusted source, made by us under the URL policy.

Why: FFmpeg opens more than the URL it is given: HTTP redirects, HLS playlists, their
segments and keys, files a local playlist names. Left to FFmpeg, each of those could reach
any address. For an untrusted source the container is opened with ``io_open=GuardedOpener``,
so each of those opens comes here: HTTP(S) is fetched by ``HttpReader`` from the address the
policy checked (the name kept for the Host header and TLS), each redirect is checked again,
local files must lie inside the allowed roots, and every other scheme is refused.
"""

from __future__ import annotations

import base64
import http.client
import io
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from mmlm_stream.security.url_policy import Target, UrlPolicy, UrlRefused
from mmlm_stream.util.redaction import redact_url

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "mmlm-stream"
_AVIO_FLAG_WRITE = 2


class HttpStatusError(OSError):
    """The server answered with an error status (``status`` kept for classification)."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(f"{redact_url(url)}: HTTP {status} {reason}".strip())
        self.status = status
        self.strerror = f"HTTP {status} {reason}".strip()


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address, with the URL's name for SNI and certificate checks."""

    def __init__(self, address: str, port: int, name: str, timeout: float, ctx: ssl.SSLContext):
        super().__init__(address, port, timeout=timeout, context=ctx)
        self._name = name
        self._ctx = ctx

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._name)


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts and TLS checking of the HTTP reads of untrusted sources."""

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    verify_tls: bool = True


class HttpReader(io.RawIOBase):
    """A read-only file over HTTP(S): seekable by Range requests when the server allows."""

    def __init__(self, url: str, policy: UrlPolicy, settings: HttpSettings) -> None:
        super().__init__()
        self.policy = policy
        self.settings = settings
        self.url = url
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._pos = 0
        self._size: int | None = None
        self._ranges = False
        self._open(0)

    # -- the HTTP exchange ----------------------------------------------------------------

    def _connect(self, target: Target) -> http.client.HTTPConnection:
        port = target.port or (443 if target.scheme == "https" else 80)
        timeout = self.settings.connect_timeout_s
        if target.scheme == "https":
            ctx = ssl.create_default_context()
            if not self.settings.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            return _PinnedHTTPS(target.address, port, target.host, timeout, ctx)
        return http.client.HTTPConnection(target.address, port, timeout=timeout)

    def _open(self, offset: int) -> None:
        self._close_response()
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            target = self.policy.check(url)
            conn = self._connect(target)
            parts = urlsplit(url)
            path = parts.path or "/"
            if parts.query:
                path = f"{path}?{parts.query}"
            headers = {"Host": target.host_header, "User-Agent": _USER_AGENT, "Accept": "*/*"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            if parts.username is not None:
                raw = f"{parts.username}:{parts.password or ''}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException):
                conn.close()
                raise
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                response.close()
                conn.close()
                if not location:
                    raise HttpStatusError(url, response.status, "redirect without a Location")
                url = urljoin(url, location)
                continue
            if response.status >= 400 or (offset and response.status != 206):
                response.close()
                conn.close()
                raise HttpStatusError(url, response.status, response.reason)
            if conn.sock is not None:
                conn.sock.settimeout(self.settings.read_timeout_s)
            self._conn, self._response, self._pos = conn, response, offset
            if offset == 0:
                length = response.getheader("Content-Length")
                self._size = int(length) if length and length.isdigit() else None
                accepts = (response.getheader("Accept-Ranges") or "").lower()
                self._ranges = accepts == "bytes" and self._size is not None
            return
        raise UrlRefused(self.url, f"more than {MAX_REDIRECTS} redirects")

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
        if self._conn is not None:
            self._conn.close()
        self._response = self._conn = None

    # -- the file interface PyAV uses -----------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._ranges

    def read(self, size: int = -1) -> bytes:
        if self._response is None:
            return b""
        data = self._response.read(size if size >= 0 else None)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence == os.SEEK_END:
            if self._size is None:
                raise OSError("size unknown")
            offset += self._size
        if not self._ranges:
            raise OSError("the server does not allow seeking")
        if offset != self._pos:
            if self._size is not None and offset >= self._size:
                self._close_response()
                self._pos = offset
            else:
                self._open(offset)
        return self._pos

    def close(self) -> None:
        self._close_response()
        super().close()


class GuardedOpener:
    """``io_open`` of an untrusted source (module docstring); ``local``: the source is a
    local file, so files (inside the policy's roots) may be opened too."""

    def __init__(self, policy: UrlPolicy, settings: HttpSettings, *, local: bool) -> None:
        self.policy = policy
        self.settings = settings
        self.local = local

    def __call__(self, url: str, flags: int, options: dict[str, str]) -> io.RawIOBase:
        try:
            return self._open(url, flags)
        except UrlRefused as exc:
            logger.warning("%s", exc.logged)
            raise

    def _open(self, url: str, flags: int) -> io.RawIOBase:
        if flags & _AVIO_FLAG_WRITE:
            raise UrlRefused(url, "writing is not allowed")
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        if scheme in ("http", "https"):
            return HttpReader(url, self.policy, self.settings)
        if self.local and scheme in ("", "file"):
            path = urlsplit(url).path if scheme == "file" else url
            return open(self.policy.check_local(path), "rb")
        raise UrlRefused(url, f"opening '{scheme or url[:16]}' is not allowed for this source")
