"""The one configuration file (YAML) overlaid by ``MMLM_*`` environment variables.

Every key has a default and a description; unknown keys are an error (contract §9).
Environment variables address nested keys with a double underscore:
``MMLM_DECODE__FRAME_FPS=2`` sets ``decode.frame_fps``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, StringConstraints, ValidationError

from mmlm_stream.config.api import BLANK_TOKEN, ApiConfig, is_blank_secret
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.clips import ClipsConfig
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.describer import DescriberConfig
from mmlm_stream.config.events import EventsConfig
from mmlm_stream.config.fusion import FusionConfig
from mmlm_stream.config.jobs import JobsConfig
from mmlm_stream.config.live import LiveConfig
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.config.section import Section
from mmlm_stream.config.sinks import SINK_NAME, SinkConfig
from mmlm_stream.config.snapshots import SnapshotsConfig
from mmlm_stream.config.supervisor import SupervisorConfig
from mmlm_stream.config.transport import TransportConfig
from mmlm_stream.config.window import WindowConfig
from mmlm_stream.util.errors import ConfigError

ENV_PREFIX = "MMLM_"


class Config(Section):
    """Top level of the configuration file."""

    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    describer: DescriberConfig = Field(default_factory=DescriberConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    transport: TransportConfig = Field(default_factory=TransportConfig)
    snapshots: SnapshotsConfig = Field(default_factory=SnapshotsConfig)
    clips: ClipsConfig = Field(default_factory=ClipsConfig)
    sinks: dict[Annotated[str, StringConstraints(pattern=SINK_NAME)], SinkConfig] = Field(
        default_factory=dict,
        description="Named sinks (kind mqtt or webhook), each a Redis consumer group.",
    )


# Taken literally (a token may hold '#', ': ' or only digits, which YAML would cut or turn
# into a number) and never empty: elsewhere an empty value reads as null, which for these
# would mean "no auth" even when the config file sets a token.
_SECRET_KEYS = frozenset({("api", "api_token"), ("api", "api_token_file")})
_SINK_SECRETS = frozenset({"password", "password_file", "secret", "secret_file"})


def _is_sink_secret(path: list[str]) -> bool:
    """``sinks.NAME.password``, ``sinks.NAME.secret`` and header values: literal too."""
    if not path or path[0] != "sinks":
        return False
    return (len(path) == 3 and path[2] in _SINK_SECRETS) or (
        len(path) == 4 and path[2] == "headers"
    )


def _overlay_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = data
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment {name}: '{key}' is not a section")
            node = child
        if tuple(path) in _SECRET_KEYS or _is_sink_secret(path):
            if is_blank_secret(raw):
                raise ConfigError(f"environment {name}: {BLANK_TOKEN}")
            node[path[-1]] = raw.strip()
        else:
            node[path[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def _describe(error: ValidationError, origin: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{origin}: {where}: {first['msg']}{more}"


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any), apply ``MMLM_*`` variables, validate everything."""
    origin = str(path) if path else "configuration"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    data = _overlay_env(data, os.environ if environ is None else environ)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None
