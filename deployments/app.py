"""The Serve application: a Decoder bound to one encoder deployment per enabled role.

``serve run``/``serve deploy`` of ``deployments/local-cpu.yaml`` or ``gpu.yaml`` import
``build_app``; the CLI calls it too, applying the same YAML's per-deployment options.
"""

from __future__ import annotations

import os
from typing import Any

from ray.serve import Application

from mmlm_stream.config import Config, load_config
from mmlm_stream.deployments.decoder import Decoder
from mmlm_stream.deployments.encoder import DEPLOYMENT_NAMES, RoleEncoder
from mmlm_stream.deployments.publisher import Publisher
from mmlm_stream.encoding import RoleEncoders


class _Roles(RoleEncoders):
    """Only for the rule of which roles are enabled; runs nothing."""

    def run(self, role: Any, items: Any) -> Any:
        raise NotImplementedError

    def model_ids(self) -> dict[str, str]:
        return {}


def build_app(args: dict[str, Any]) -> Application:
    """args: ``config_file`` (YAML path) or ``config`` (dict), ``deployments`` (name → Serve
    options, as in the Serve config), ``redis_url`` (publish there when given; default
    $REDIS_URL), ``service`` (put the HTTP ingress in front), ``jobs_dir``."""
    if args.get("config") is not None:
        config = Config.model_validate(args["config"])
    else:
        config = load_config(args.get("config_file"))
    options: dict[str, dict[str, Any]] = args.get("deployments") or {}
    models = config.models.model_dump(mode="json")
    encoders = {}
    for role in _Roles(config.models).roles:
        name = DEPLOYMENT_NAMES[role]
        deployment = RoleEncoder.options(name=name, **options.get(name, {}))
        encoders[role.value] = deployment.bind(role.value, models)
    if args.get("redis_url") is None:  # "" from the CLI means: do not publish
        args = {**args, "redis_url": os.environ.get("REDIS_URL")}
    publisher = Publisher.options(**options.get("Publisher", {})).bind(
        args["redis_url"] or None, config.redis.model_dump(mode="json")
    )
    decoder = Decoder.options(**options.get("Decoder", {})).bind(encoders, publisher)
    if not args.get("service"):
        return decoder
    from mmlm_stream.deployments.ingress import Ingress

    jobs_dir = args.get("jobs_dir") or "jobs"
    return Ingress.options(**options.get("Ingress", {})).bind(
        decoder,
        encoders,
        publisher,
        config.model_dump(mode="json"),
        args.get("redis_url"),
        jobs_dir,
    )
