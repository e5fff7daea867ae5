"""docker-compose.yml: the service, Redis and Mosquitto wired together the way the config
and the CLI read them (checked here without Docker: this machine pulls no images)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mmlm_stream.cli.main import build_parser
from mmlm_stream.config import load_config
from mmlm_stream.config.sinks import MqttSinkConfig

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def _interpolate(value: str) -> str:
    """Compose's ${VAR:?message} and ${VAR:-default}, with a token set and defaults taken."""
    value = re.sub(r"\$\{MMLM_API_TOKEN:\?[^}]*\}", "0123456789abcdef0123456789abcdef", value)
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_the_compose_file_runs_serve_with_redis_and_an_mqtt_sink_to_its_broker():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"mmlm", "redis", "mosquitto"}
    mmlm = services["mmlm"]
    args = build_parser().parse_args(mmlm["command"][1:])
    assert args.func.__name__ == "cmd_serve" and args.host == "0.0.0.0"
    environ = {k: _interpolate(str(v)) for k, v in mmlm["environment"].items()}
    assert environ["REDIS_URL"].startswith("redis://redis:")
    config = load_config(None, environ=environ)
    sink = config.sinks["homeassistant"]
    assert isinstance(sink, MqttSinkConfig) and sink.host == "mosquitto"
    assert config.api.token()  # beyond loopback the service demands one
    assert set(mmlm["depends_on"]) == {"redis", "mosquitto"}


def test_the_compose_file_refuses_to_start_without_a_token():
    mmlm = yaml.safe_load(COMPOSE.read_text())["services"]["mmlm"]
    assert re.fullmatch(r"\$\{MMLM_API_TOKEN:\?.+\}", mmlm["environment"]["MMLM_API__API_TOKEN"])
