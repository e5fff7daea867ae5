"""The one policy every URL an API caller hands the service must pass (contract §7).

Why: a stream, job or webhook URL from an API caller is untrusted. Left alone, FFmpeg would
open loopback services, the cloud metadata address or the LAN for it, listen on a port
(``tcp://0.0.0.0:9?listen=1``) or follow a redirect anywhere. So a URL is checked here,
its host resolved once and every address checked, and the caller connects to the address
this check returned (``Target.pinned_url``), not to a name that may resolve elsewhere a
moment later (DNS rebinding).

Internal addresses (loopback, private, link-local, carrier-grade NAT, multicast,
unspecified, reserved: anything not globally routable) are refused unless a pattern of
``api.allow_internal`` names the host or covers the address. ``api.allowed_hosts``, when
set, restricts URLs to those hosts. Refusals carry a detail for the log; callers answer
API clients with the one generic ``REFUSED`` reason, so the API cannot map a network.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from mmlm_stream.util.redaction import redact_url

if TYPE_CHECKING:
    from mmlm_stream.config.api import ApiConfig

REFUSED = "refused by the URL policy"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int | None], list[str]]

# FFmpeg reads "?key=value" options from these URLs; only the harmless ones may pass
# (never listen, localport, localaddr, sources, reuse, connect, mode=listener).
URL_OPTIONS: dict[str, frozenset[str]] = {
    "tcp": frozenset({"timeout"}),
    "udp": frozenset({"fifo_size", "overrun_nonfatal", "buffer_size", "pkt_size", "timeout"}),
    "srt": frozenset(
        {"latency", "rcvlatency", "peerlatency", "passphrase", "pbkeylen", "streamid", "timeout"}
    ),
    "rtp": frozenset(),
}

# FFmpeg protocols a source of each scheme may use, nested opens included (HLS segments
# and keys, RTSP's transport): never file, concat, subfile, data, pipe or fd.
PROTOCOLS: dict[str, str] = {
    "http": "http,https,tcp,tls",
    "https": "http,https,tcp,tls",
    "rtsp": "rtsp,tcp,udp,rtp",
    "rtsps": "rtsps,rtsp,tcp,tls,udp,rtp",
    "rtmp": "rtmp,tcp",
    "rtmps": "rtmps,rtmp,tcp,tls",
    "srt": "srt",
    "tcp": "tcp",
    "udp": "udp",
    "rtp": "rtp,udp",
}


class UrlRefused(ValueError):
    """A URL the policy refuses; ``detail`` says why (for the log, never for the caller)."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"{redact_url(url)}: {REFUSED}")
        self.url = redact_url(url)
        self.detail = detail

    @property
    def logged(self) -> str:
        return f"{self.url}: {REFUSED} ({self.detail})"


def resolve_host(host: str, port: int | None) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (FFmpeg's resolver too:
    ``getaddrinfo`` reads forms like ``2130706433`` or ``127.1`` as 127.0.0.1)."""
    try:
        infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        return []
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def parse_address(text: str) -> Address:
    """An address as the policy judges it: an IPv4-mapped IPv6 address is its IPv4 one."""
    address = ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_internal(address: Address) -> bool:
    """Whether reaching ``address`` could reach something that is not the public internet."""
    return not address.is_global or address.is_multicast or address.is_unspecified


def _networks(patterns: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in patterns if "/" in p)


def _names(patterns: Iterable[str]) -> tuple[str, ...]:
    return tuple(p.lower() for p in patterns if "/" not in p)


@dataclass(frozen=True)
class Target:
    """A URL that passed, with the address its connection must use."""

    url: str
    scheme: str
    host: str
    port: int | None
    address: str

    @property
    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (credentials kept)."""
        parts = urlsplit(self.url)
        at = parts.netloc.rfind("@")
        userinfo = parts.netloc[: at + 1] if at >= 0 else ""
        address = f"[{self.address}]" if ":" in self.address else self.address
        port = f":{self.port}" if self.port is not None else ""
        return urlunsplit(parts._replace(netloc=f"{userinfo}{address}{port}"))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port is not None else host


@dataclass(frozen=True)
class UrlPolicy:
    """Schemes, hosts and internal networks a caller's URLs may use."""

    schemes: frozenset[str]
    allowed_hosts: tuple[str, ...] = ()
    allow_internal: tuple[str, ...] = ()
    verify_tls: bool = True
    allow_local_files: bool = False
    local_roots: tuple[Path, ...] = ()
    resolve: Resolver = field(default=resolve_host, compare=False)

    def check(self, url: str) -> Target:
        """The ``Target`` to connect to, or ``UrlRefused``."""
        if any(ord(char) <= 32 or ord(char) == 127 for char in url):
            raise UrlRefused(url, "contains spaces or control characters")
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise UrlRefused(url, f"not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise UrlRefused(url, f"scheme '{scheme or 'none'}' is not allowed")
        if not host:
            raise UrlRefused(url, "names no host")
        self._check_options(url, scheme, parts.query)
        addresses = self.resolve(host, port)
        if not addresses:
            raise UrlRefused(url, f"host '{host}' does not resolve")
        parsed = []
        for text in addresses:
            try:
                parsed.append(parse_address(text))
            except ValueError:
                raise UrlRefused(url, f"host '{host}' resolves to {text!r}") from None
        if self.allowed_hosts and not self._listed(host, parsed, self.allowed_hosts):
            raise UrlRefused(url, f"host '{host}' is not in api.allowed_hosts")
        for address in parsed:
            if is_internal(address) and not self._listed(host, [address], self.allow_internal):
                raise UrlRefused(
                    url, f"host '{host}' is the internal address {address} (api.allow_internal)"
                )
        return Target(url, scheme, host, port, str(parsed[0]))

    @staticmethod
    def _check_options(url: str, scheme: str, query: str) -> None:
        allowed = URL_OPTIONS.get(scheme)
        if allowed is None or not query:
            return
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key not in allowed:
                raise UrlRefused(url, f"URL option '{key}' is not allowed")
            if scheme == "srt" and key == "mode" and value != "caller":
                raise UrlRefused(url, "only SRT caller mode is allowed")

    @staticmethod
    def _listed(host: str, addresses: list[Address], patterns: tuple[str, ...]) -> bool:
        """Whether a name pattern matches ``host`` or every address lies in a listed network."""
        name = host.lower().strip("[]")
        if any(fnmatchcase(name, pattern) for pattern in _names(patterns)):
            return True
        networks = _networks(patterns)
        return bool(networks) and all(
            any(address in network for network in networks) for address in addresses
        )

    def check_local(self, path: str) -> str:
        """The real path of a local file a caller may read, or ``UrlRefused``: only with
        ``allow_local_files``, absolute, no ``..``, inside ``local_roots`` when set
        (symlinks followed), no FFmpeg protocol prefix (``concat:``, ``subfile,``)."""
        if not self.allow_local_files:
            raise UrlRefused(path, "local files are not allowed (api.allow_local_files)")
        pure = PurePosixPath(path)
        if not pure.is_absolute():
            raise UrlRefused(path, "a local path must be absolute")
        if ".." in pure.parts:
            raise UrlRefused(path, "a local path must not contain '..'")
        real = os.path.realpath(path)
        if self.local_roots and not any(_inside(real, root) for root in self.local_roots):
            raise UrlRefused(path, "a local path outside api.local_roots")
        return real

    def protocols(self, scheme: str) -> str | None:
        """FFmpeg's ``protocol_whitelist`` for a source of ``scheme``."""
        return PROTOCOLS.get(scheme)


def _inside(real: str, root: Path) -> bool:
    base = os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def api_policy(api: ApiConfig, resolve: Resolver = resolve_host) -> UrlPolicy:
    """The policy of URLs from API callers, from ``api.*``."""
    return UrlPolicy(
        schemes=frozenset(api.allowed_schemes),
        allowed_hosts=tuple(api.allowed_hosts),
        allow_internal=tuple(api.allow_internal),
        verify_tls=api.verify_tls,
        allow_local_files=api.allow_local_files,
        local_roots=tuple(api.local_roots),
        resolve=resolve,
    )
