"""Configuration of the HTTP API (``api:`` in the config file; SPEC section 7).

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

from mmlm_stream.errors import ConfigError

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


class ApiConfig(BaseModel):
    """Who may call the API, which sources it may open, and the limits of each request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_token: SecretStr | None = Field(
        None,
        description=(
            "Bearer token every route but /healthz requires; null = open (no auth). Quote a "
            "numeric token in YAML and environment values."
        ),
    )
    api_token_file: Path | None = Field(
        None,
        description=(
            "Read the token from this file instead (e.g. a mounted Kubernetes secret); "
            "surrounding whitespace is ignored."
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
            "Hosts stream URLs may point at: names with * wildcards ('*.cams.example') or "
            "networks ('10.0.0.0/8'); empty = any host."
        ),
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

    @field_validator("allowed_hosts")
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

    @model_validator(mode="after")
    def _one_token_source(self) -> ApiConfig:
        if self.api_token is not None and self.api_token_file is not None:
            raise ValueError("set api_token or api_token_file, not both")
        if self.api_token is not None and not self.api_token.get_secret_value():
            raise ValueError("api_token must not be empty (null turns auth off)")
        return self

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
            if not text:
                raise ConfigError(f"{self.api_token_file}: the API token file is empty")
            return text
        return self.api_token.get_secret_value() if self.api_token is not None else None
