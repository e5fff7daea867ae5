"""One client factory: every Redis client of the service gets the same TLS and timeouts."""

from __future__ import annotations

from pathlib import Path

from mmlm_stream.bus.redis_client import async_client_for, client_for
from mmlm_stream.config.bus import RedisConfig


def _kwargs(client) -> dict:
    return client.connection_pool.connection_kwargs


def test_sync_and_async_clients_share_the_tls_settings(tmp_path: Path):
    ca = tmp_path / "ca.pem"
    config = RedisConfig(ssl_ca_certs=ca, ssl_cert_reqs="required", connect_timeout_s=1.5)
    url = "rediss://127.0.0.1:6390/0"
    sync = _kwargs(client_for(url, config))
    asynchronous = _kwargs(async_client_for(url, config, socket_timeout=7.0))
    for kwargs in (sync, asynchronous):
        assert kwargs["ssl_ca_certs"] == str(ca)
        assert kwargs["ssl_cert_reqs"] == "required"
        assert kwargs["socket_connect_timeout"] == 1.5
        assert kwargs["retry"].get_retries() == 0
    assert asynchronous["socket_timeout"] == 7.0


def test_a_plain_url_gets_no_tls_options():
    kwargs = _kwargs(async_client_for("redis://127.0.0.1:6379/0", RedisConfig(), socket_timeout=1))
    assert not any(name.startswith("ssl_") for name in kwargs)
