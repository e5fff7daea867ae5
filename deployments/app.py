"""The Serve application: a Decoder bound to one encoder deployment per enabled modality.

``serve run``/``serve deploy`` of ``deployments/local-cpu.yaml`` or ``gpu.yaml`` import
``build_app``; the CLI calls it too, applying the same YAML's per-deployment options.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ray.serve import Application

from mmlm_stream.config import Config, load_config
from mmlm_stream.deployments.decoder import Decoder
from mmlm_stream.deployments.encoder import DEPLOYMENT_NAMES, SHARED_DEPLOYMENT, ModalityEncoder
from mmlm_stream.deployments.publisher import Publisher
from mmlm_stream.models.registry import enabled_modalities


def app_config(args: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """The config ``build_app`` runs with, where it runs (a pod, the CLI).

    ``config_file`` (YAML path, or null for none) is overlaid by the ``MMLM_*`` variables of
    ``environ`` (default: this process's), exactly as ``load_config`` does for the CLI; an
    inline ``config`` is taken as complete: the CLI passes one it already overlaid and then
    adjusted (``watch --loop``), which the environment must not undo.

    With ``service`` the API is checked as ``serve`` checks it: no token on an address other
    than loopback is a ``ConfigError`` (``http_host``: where the Serve proxies listen; absent
    on a cluster, which counts as not loopback), and the Host header allow-list is resolved
    for that address, so the ingress replicas need not know it.
    """
    if args.get("config") is not None:
        config = Config.model_validate(args["config"])
    else:
        config = load_config(args.get("config_file"), environ)
    if not args.get("service"):
        return config
    host = args.get("http_host")
    config.api.require_token_for(host)
    api = config.api.model_copy(
        update={"allowed_hosts_header": config.api.host_header_patterns(host)}
    )
    return config.model_copy(update={"api": api})


def bind_encoders(config: Config, options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Modality → bound encoder deployment. A modality gets its own deployment
    (``DEPLOYMENT_NAMES``) unless the Serve config lists ``Encoders`` and not that modality's
    name: then it shares the one ``Encoders`` replica with the other such modalities (see
    ``deployments/encoder``)."""
    models = config.models
    modalities = enabled_modalities(models)
    shared = [
        modality
        for modality in modalities
        if SHARED_DEPLOYMENT in options and DEPLOYMENT_NAMES[modality] not in options
    ]
    encoders: dict[str, Any] = {}
    if shared:
        deployment = ModalityEncoder.options(name=SHARED_DEPLOYMENT, **options[SHARED_DEPLOYMENT])
        bound = deployment.bind([modality.value for modality in shared], models)
        encoders.update({modality.value: bound for modality in shared})
    for modality in modalities:
        if modality not in shared:
            name = DEPLOYMENT_NAMES[modality]
            deployment = ModalityEncoder.options(name=name, **options.get(name, {}))
            encoders[modality.value] = deployment.bind(modality.value, models)
    return encoders


def build_app(args: dict[str, Any]) -> Application:
    """args: ``config_file`` (YAML path) or ``config`` (dict), ``deployments`` (name → Serve
    options, as in the Serve config), ``redis_url`` (publish there when given; default
    $REDIS_URL), ``service`` (put the HTTP ingress in front), ``http_host`` (the address the
    Serve proxies listen on; see ``app_config``), ``jobs_dir``."""
    config = app_config(args)
    options: dict[str, dict[str, Any]] = args.get("deployments") or {}
    encoders = bind_encoders(config, options)
    if args.get("redis_url") is None:  # "" from the CLI means: do not publish
        args = {**args, "redis_url": os.environ.get("REDIS_URL")}
    publisher = Publisher.options(**options.get("Publisher", {})).bind(
        args["redis_url"] or None, config.redis, config.transport
    )
    decoder = Decoder.options(**options.get("Decoder", {})).bind(encoders, publisher)
    if not args.get("service"):
        return decoder
    from mmlm_stream.deployments.ingress import Ingress

    jobs_dir = args.get("jobs_dir") or "jobs"
    sinks = None
    if config.sinks and args.get("redis_url"):
        from mmlm_stream.deployments.sinks import Sinks

        sinks = Sinks.options(**options.get("Sinks", {})).bind(config, args["redis_url"])
    return Ingress.options(**options.get("Ingress", {})).bind(
        decoder,
        encoders,
        publisher,
        config,
        args.get("redis_url"),
        jobs_dir,
        sinks,
    )
