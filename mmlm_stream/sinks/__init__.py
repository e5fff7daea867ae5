"""Sinks: events delivered to the tools people already use (MQTT, Home Assistant, webhooks).

``open_runner(name, config, redis_url)`` builds one configured sink and the consumer-group
runner that feeds it; ``serve`` runs every configured sink (deployments/sinks.py) and
``mmlm-stream sink NAME`` runs one on its own. Both call this function.
"""

from __future__ import annotations

from mmlm_stream.config import Config
from mmlm_stream.config.sinks import MqttSinkConfig
from mmlm_stream.pipeline.snapshots import SnapshotStore
from mmlm_stream.security.url_policy import Resolver, UrlRefused, api_policy, resolve_host
from mmlm_stream.sinks.base import Sink
from mmlm_stream.sinks.runner import SinkRunner
from mmlm_stream.util.errors import ConfigError


def open_sink(name: str, config: Config, resolve: Resolver = resolve_host) -> Sink:
    """The far side of sink ``name``; ``ConfigError`` (one line) when it cannot be built.
    ``resolve`` resolves webhook hosts (tests map names to addresses without DNS)."""
    if name not in config.sinks:
        known = ", ".join(sorted(config.sinks)) or "none configured"
        raise ConfigError(f"sink '{name}' is not configured (sinks: {known})")
    entry = config.sinks[name]
    try:
        if isinstance(entry, MqttSinkConfig):
            from mmlm_stream.sinks.mqtt import MqttSink

            store = SnapshotStore(config.snapshots) if config.snapshots.enabled else None
            queries = [q.name for q in config.events.queries]
            return MqttSink(name, entry, queries=queries, snapshots=store)
        from mmlm_stream.sinks.webhook import WebhookSink

        return WebhookSink(name, entry, api_policy(config.api, resolve))
    except UrlRefused as exc:
        raise ConfigError(f"sinks.{name}.url: {exc.logged}") from None
    except ValueError as exc:
        raise ConfigError(f"sinks.{name}: {exc}") from None


def open_runner(name: str, config: Config, redis_url: str) -> SinkRunner:
    return SinkRunner(name, config.sinks[name], open_sink(name, config), redis_url, config.redis)
