"""Section ``transport``: what carries the records the Publisher deployment hands over."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import Field, field_validator

from mmlm_stream.config.section import Section

REDIS = "redis"


def resolve_class(target: str) -> type:
    """``"package.module:Class"`` → the class; a ValueError saying what is wrong otherwise."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"'{target}' is not redis or 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"'{target}': module {module_name} cannot be imported ({exc})") from None
    found = getattr(module, attribute, None)
    if not isinstance(found, type):
        raise ValueError(f"'{target}': {module_name} has no class {attribute}")
    return found


class TransportConfig(Section):
    """The Publisher deployment's transport (docs/architecture.md, "A transport"). Live
    streams are registered in Redis whichever transport carries the records."""

    publisher: str = Field(
        REDIS,
        description="redis (the contract's streams and keys), or 'package.module:Class' of a "
        "bus.transport.Publisher subclass, built with `options` as keyword arguments.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of a custom publisher class."
    )

    @field_validator("publisher")
    @classmethod
    def _importable(cls, value: str) -> str:
        """Checked when the config is read, so a typo fails before Ray starts."""
        if value != REDIS:
            resolve_class(value)
        return value
