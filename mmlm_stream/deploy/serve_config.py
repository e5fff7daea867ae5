"""Read the Serve config YAMLs in deployments/ so the CLI applies exactly what `serve deploy`
would: per-deployment resources, batching, autoscaling."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from mmlm_stream.util.errors import ConfigError

logger = logging.getLogger(__name__)

LEGACY_DEPLOYMENT_NAMES = {"FrameEncoder": "VisualEncoder", "DetectorEncoder": "ObjectsEncoder"}
"""Deployment names of older Serve configs, read under their new names (``mmlm-stream`` only:
``serve run`` of such a file needs the new names)."""

# The deployment options `.options()` accepts that a Serve config may set per deployment.
OPTION_KEYS = {
    "num_replicas",
    "ray_actor_options",
    "autoscaling_config",
    "max_ongoing_requests",
    "max_queued_requests",
    "user_config",
    "max_replicas_per_node",
    "graceful_shutdown_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
}


def default_serve_config() -> Path:
    """local-cpu.yaml next to the deployments (installed or in the checkout)."""
    from mmlm_stream import deployments

    return Path(deployments.__file__).resolve().parent / "local-cpu.yaml"


def read_serve_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such Serve config") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data.get("applications"):
        raise ConfigError(f"{path}: a Serve config needs an 'applications' list")
    return data


def deployment_options(path: Path) -> dict[str, dict[str, Any]]:
    """name → Serve options of the first application in the config."""
    app = read_serve_config(path)["applications"][0]
    options = {}
    for entry in app.get("deployments") or []:
        unknown = set(entry) - OPTION_KEYS - {"name"}
        if unknown:
            raise ConfigError(f"{path}: deployment {entry.get('name')}: unknown {sorted(unknown)}")
        name = LEGACY_DEPLOYMENT_NAMES.get(entry["name"], entry["name"])
        if name != entry["name"]:
            logger.warning("%s: deployment %s is now %s", path, entry["name"], name)
        options[name] = {k: v for k, v in entry.items() if k != "name"}
    return options
