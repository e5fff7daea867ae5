"""Configuration of the HTTP API (``api:`` in the config file; contract §7).

The lead's top-level ``Config`` holds it as ``api: ApiConfig``, so every field here is
``api.<field>`` in the YAML file and ``MMLM_API__<FIELD>`` in the environment. The defaults
are the safe ones: only network stream schemes, no local files, bounded bodies and clients.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)

from mmlm_stream.util.errors import ConfigError

DEFAULT_SCHEMES: tuple[str, ...] = (
    "rtsp",
    "rtsps",
    "rtmp",
    "rtmps",
    "http",
    "https",
    "udp",
    "tcp",
    "srt",
)
_NEVER_SCHEMES = frozenset({"file"})
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
_ALL_INTERFACES = frozenset({"", "0.0.0.0", "::"})
# Spellings of "nothing": as a token they would read as "no auth" somewhere along the way.
_NOT_A_SECRET = frozenset({"", "null", "~", "none"})
_PLACEHOLDERS = frozenset({"change-me", "changeme", "change_me"})
PLACEHOLDER_TOKEN = "the example's placeholder is not a token (generate one: openssl rand -hex 32)"
BLANK_TOKEN = (
    "empty, blank or null: an empty token is an error, never 'off' (for no token, leave it out)"
)


def is_blank_secret(text: str) -> bool:
    """Whether ``text`` is empty, whitespace or a spelling of null (YAML's, Python's)."""
    return text.strip().lower() in _NOT_A_SECRET


def is_placeholder(text: str) -> bool:
    """The example Secret's value: a deployment that kept it would have a public token."""
    return text.strip().lower() in _PLACEHOLDERS


def is_loopback(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1 (names are never resolved)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ApiConfig(BaseModel):
    """Who may call the API, which sources it may open, and the limits of each request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_token: SecretStr | None = Field(
        None,
        description=(
            "Bearer token every route but /healthz requires; null = none (an open API, only "
            "on a loopback address unless allow_anonymous). Empty, blank or 'null' text is an "
            "error, never 'off'. Surrounding whitespace is ignored; quote a numeric token in "
            "YAML."
        ),
    )
    api_token_file: Path | None = Field(
        None,
        description=(
            "Read the token from this file instead (e.g. a mounted Kubernetes secret); "
            "surrounding whitespace is ignored, an empty or blank file is an error."
        ),
    )
    allow_anonymous: bool = Field(
        False,
        description=(
            "Let `serve` (and the cluster's ingress) run without a token on an address other "
            "than loopback: the explicit way to an open API. Without it they refuse to start."
        ),
    )
    allowed_hosts_header: list[str] = Field(
        default_factory=list,
        description=(
            "Host header values the API answers (names, IPs, '*.example.com' wildcards, '*' "
            "for any; no port), others get 400, which stops DNS rebinding; empty = the bind "
            "address plus localhost, 127.0.0.1 and ::1 (any host when bound to all interfaces "
            "or on a cluster, where a token is required)."
        ),
    )
    allowed_schemes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SCHEMES),
        description=(
            "URL schemes a stream or job input may use. file:// and local paths are refused "
            "whatever this says unless allow_local_files is true."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Hosts stream, job and webhook URLs may point at: names with * wildcards "
            "('*.cams.example') or networks ('203.0.113.0/24'); empty = any public host."
        ),
    )
    allow_internal: list[str] = Field(
        default_factory=list,
        description=(
            "Names or networks whose internal addresses (loopback, private, link-local, "
            "multicast, ...) URLs may reach, e.g. '192.168.1.0/24' for LAN cameras; "
            "empty = none: such addresses are refused."
        ),
    )
    verify_tls: bool = Field(
        True,
        description="Check the certificates of https:// sources of API callers.",
    )
    max_streams: int = Field(
        64, ge=1, description="Most live streams the service runs; POST /streams past it: 429."
    )
    max_jobs: int = Field(
        16,
        ge=1,
        description="Most batch jobs queued or running at once; POST /jobs past it: 429.",
    )
    allow_local_files: bool = Field(
        False,
        description="Accept local paths, devices and file:// URLs in POST /streams and /jobs.",
    )
    local_roots: list[Path] = Field(
        default_factory=list,
        description=(
            "With allow_local_files: local inputs must resolve (symlinks followed) inside "
            "one of these folders; empty = anywhere."
        ),
    )
    open_docs: bool = Field(
        False,
        description=(
            "Serve /docs and /openapi.json without the token (the schema holds no data), so "
            "a browser can show them."
        ),
    )
    max_body_bytes: int = Field(
        65_536, ge=1_024, description="Largest request body; larger ones get 413."
    )
    max_job_inputs: int = Field(1_000, ge=1, description="Most inputs in one POST /jobs.")
    max_url_chars: int = Field(
        2_048, ge=64, description="Longest stream URL or job input accepted."
    )
    search_max_top_k: int = Field(100, ge=1, description="Largest top_k of GET /search.")
    sse_heartbeat_s: float = Field(
        15.0,
        gt=0,
        le=300,
        description=(
            "An SSE comment is sent after this long without events, so proxies keep the "
            "connection and clients notice a dead one."
        ),
    )
    sse_retry_ms: int = Field(
        3_000, ge=100, description="Reconnect delay that SSE clients are told to use."
    )
    sse_batch: int = Field(100, ge=1, description="Redis entries read per XREAD of /events.")
    sse_max_clients: int = Field(
        100, ge=1, description="Concurrent /events clients (one Redis connection each); more: 503."
    )
    health_timeout_s: float = Field(
        5.0, gt=0, description="GET /healthz answers 503 when the pipeline takes longer."
    )

    @field_validator("allowed_schemes")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        schemes = [scheme.strip().lower().removesuffix("://") for scheme in value]
        for scheme in schemes:
            if not scheme or not scheme.replace("+", "").replace("-", "").isalnum():
                raise ValueError(f"not a URL scheme: {scheme!r}")
            if scheme in _NEVER_SCHEMES:
                raise ValueError("file is not a scheme to list; use allow_local_files")
        return schemes

    @field_validator("allowed_hosts", "allow_internal")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        hosts = [host.strip().lower() for host in value]
        for host in hosts:
            if not host:
                raise ValueError("empty host pattern")
            if "/" in host:
                try:
                    ipaddress.ip_network(host, strict=False)
                except ValueError:
                    raise ValueError(f"not a network: {host!r}") from None
        return hosts

    @field_serializer("api_token", when_used="json")
    def _token_json(self, value: SecretStr | None) -> str | None:
        """The real token in JSON dumps: the config travels to Serve replicas as JSON, and a
        masked '**********' there would become the token. ``repr`` and logs stay masked."""
        return value.get_secret_value() if value is not None else None

    @field_validator("api_token")
    @classmethod
    def _token_text(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if is_blank_secret(text):
            raise ValueError(BLANK_TOKEN)
        if is_placeholder(text):
            raise ValueError(PLACEHOLDER_TOKEN)
        return SecretStr(text)

    @field_validator("allowed_hosts_header")
    @classmethod
    def _host_header_patterns(cls, value: list[str]) -> list[str]:
        patterns = [pattern.strip().lower().strip("[]").rstrip(".") for pattern in value]
        for pattern in patterns:
            if not pattern or any(c in pattern for c in "/ \t@"):
                raise ValueError(f"not a host name or address: {pattern!r}")
            if ":" in pattern and not _is_ip(pattern):
                raise ValueError(f"{pattern!r}: give the host without a port")
        return patterns

    @model_validator(mode="after")
    def _one_token_source(self) -> ApiConfig:
        if self.api_token is not None and self.api_token_file is not None:
            raise ValueError("set api_token or api_token_file, not both")
        return self

    def require_token_for(self, bind_host: str | None) -> None:
        """``ConfigError`` when the API would be open to more than this machine: no token is
        configured, ``bind_host`` (None: unknown, e.g. a cluster's Serve proxies) is not a
        loopback address and ``allow_anonymous`` is off. Only checks that a token source is
        set; ``token()`` reads and checks the file."""
        if self.api_token is not None or self.api_token_file is not None:
            return
        if self.allow_anonymous or (bind_host is not None and is_loopback(bind_host)):
            return
        where = f"on {bind_host}" if bind_host is not None else "beyond loopback"
        raise ConfigError(
            f"refusing to serve the API {where} without a token: set api.api_token or "
            "api.api_token_file (MMLM_API__API_TOKEN), or api.allow_anonymous: true for an "
            "open API"
        )

    def host_header_patterns(self, bind_host: str | None) -> list[str]:
        """The Host header patterns the API answers when served on ``bind_host``:
        ``allowed_hosts_header`` when set, else the bind address and the loopback names, else
        (all interfaces, or unknown) any: there ``require_token_for`` demanded a token, which
        a rebinding page does not have."""
        if self.allowed_hosts_header:
            return list(self.allowed_hosts_header)
        host = (bind_host or "").strip().strip("[]").lower()
        if host in _ALL_INTERFACES:
            return ["*"]
        return list(dict.fromkeys([host, *LOOPBACK_NAMES]))

    def token(self) -> str | None:
        """The configured token (``api_token_file`` is read now), or None; ``ConfigError``
        when the file cannot be read or is empty."""
        if self.api_token_file is not None:
            try:
                text = self.api_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{self.api_token_file}: cannot read the API token ({exc.strerror or exc})"
                ) from None
            if is_blank_secret(text):
                raise ConfigError(f"{self.api_token_file}: the API token file is empty")
            if is_placeholder(text):
                raise ConfigError(f"{self.api_token_file}: {PLACEHOLDER_TOKEN}")
            return text
        return self.api_token.get_secret_value() if self.api_token is not None else None
