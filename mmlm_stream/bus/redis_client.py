"""Redis clients for every part of the service: one place for timeouts, TLS and retries."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.util.errors import MmlmError
from mmlm_stream.util.redaction import redact_url

DEFAULT_URL = "redis://127.0.0.1:6379/0"


URL_ENV = "REDIS_URL"


_DEFAULT = object()


RedisClient = redis.Redis | redis.RedisCluster
"""What ``client_for`` returns: one server, or a Redis Cluster (``redis.cluster``)."""


RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
)
"""Failures that a later attempt may well not hit again: the server (or a cluster node) is
away, or a cluster is failing over. ``RedisClusterException`` is what redis-py raises when
no node of the cluster answers; it is not a ``RedisError``."""


class RedisUnavailable(MmlmError):
    """No usable Redis server; the message is one line: ``<url>: <reason>``."""


def error_reason(exc: BaseException) -> str:
    """A short lower-case reason for a failed Redis call, e.g. ``connection refused``."""
    if isinstance(exc, redis.AuthenticationError):
        return "authentication failed (wrong user or password)"
    if isinstance(exc, redis.ResponseError) and str(exc).startswith("NOAUTH"):
        return "authentication required (put user:password in the URL)"
    if isinstance(exc, redis.TimeoutError):
        return "timed out"
    if isinstance(exc, redis.exceptions.RedisClusterException) and isinstance(
        exc.__cause__, redis.RedisError
    ):
        return f"no cluster node answers ({error_reason(exc.__cause__)})"
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, socket.gaierror):
        return "unknown host"
    if isinstance(cause, OSError) and cause.errno is not None:
        if cause.errno == errno.ECONNREFUSED:
            return "connection refused"
        return os.strerror(cause.errno).lower()
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


CLIENT_NAME = "mmlm-stream"


def _options(
    url: str,
    config: RedisConfig,
    *,
    connect_timeout: float | None,
    socket_timeout: float | None,
    client_name: str,
) -> dict[str, Any]:
    """Connection options every client of the service shares: the config's timeouts and TLS
    files, keep-alive, and no hidden retries (the bus has its own buffering and backoff)."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout or config.connect_timeout_s,
        "socket_timeout": socket_timeout,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
    }
    if urlsplit(url).scheme == "rediss":
        kwargs["ssl_cert_reqs"] = config.ssl_cert_reqs
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            value = getattr(config, name)
            if value is not None:
                kwargs[name] = str(value)
    return kwargs


def async_client_for(
    url: str,
    config: RedisConfig,
    *,
    socket_timeout: float | None,
    client_name: str = CLIENT_NAME,
    decode_responses: bool = False,
) -> aioredis.Redis:
    """The asyncio client with the same options as ``client_for`` (the HTTP API's reads)."""
    kwargs = _options(
        url, config, connect_timeout=None, socket_timeout=socket_timeout, client_name=client_name
    )
    try:
        return aioredis.Redis.from_url(url, decode_responses=decode_responses, **kwargs)
    except ValueError as exc:
        raise RedisUnavailable(f"{redact_url(url)}: invalid Redis URL ({exc})") from None


def client_for(
    url: str,
    config: RedisConfig,
    *,
    connect_timeout: float | None = None,
    socket_timeout: Any = _DEFAULT,
) -> RedisClient:
    """A client for ``url`` with the config's timeouts and TLS files and no hidden retries.

    redis-py would otherwise retry each failed command itself; the bus has its own
    buffering and backoff, and callers want a failure to surface at once. A single-server
    client connects on first use; a cluster client (``config.cluster``) asks the node for the
    slot map at once, so it raises ``RedisUnavailable`` when no node answers.
    """
    kwargs = _options(
        url,
        config,
        connect_timeout=connect_timeout,
        socket_timeout=config.socket_timeout_s if socket_timeout is _DEFAULT else socket_timeout,
        client_name=CLIENT_NAME,
    )
    try:
        if config.cluster:
            return redis.RedisCluster.from_url(url, **kwargs)
        return redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise RedisUnavailable(f"{redact_url(url)}: invalid Redis URL ({exc})") from None
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise RedisUnavailable(f"{redact_url(url)}: {error_reason(exc)}") from None


def socket_timeout_of(client: RedisClient) -> float | None:
    """The client's per-command socket timeout (None: it waits as long as it takes)."""
    if isinstance(client, redis.RedisCluster):
        kwargs = client.nodes_manager.connection_kwargs
    else:
        kwargs = client.connection_pool.connection_kwargs
    timeout = kwargs.get("socket_timeout")
    return float(timeout) if timeout else None


def resolve_url(
    config: RedisConfig, environ: Mapping[str, str] | None = None, default_url: str = DEFAULT_URL
) -> tuple[str, bool]:
    """(url, explicit): ``$REDIS_URL``, else ``redis.url``, else the default (not explicit)."""
    env = (os.environ if environ is None else environ).get(URL_ENV, "").strip()
    if env:
        return env, True
    if config.url:
        return config.url, True
    return default_url, False
