"""The rule types ``events.rules`` accepts, by their ``type`` key: one line per type.

``RuleItem`` is how a rule is read from the config: its ``type`` picks the model here, so a
rule type added with ``register`` (a plugin, a test) validates like a built-in one, and the
errors keep their place in the file (``events.rules.0.threshold``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import SerializeAsAny, ValidatorFunctionWrapHandler, WrapValidator

from mmlm_stream.rules.base import RuleConfig
from mmlm_stream.rules.keyword import KeywordRule
from mmlm_stream.rules.label import LabelRule
from mmlm_stream.rules.scene_change import SceneChangeRule
from mmlm_stream.rules.sound import SoundRule
from mmlm_stream.rules.speech import SpeechRule

RULE_TYPES: dict[str, type[RuleConfig]] = {}


def register(model: type[RuleConfig]) -> type[RuleConfig]:
    """Accept ``model`` in ``events.rules`` under its ``type`` default."""
    key = model.model_fields["type"].default
    if not isinstance(key, str):
        raise TypeError(f"{model.__name__} needs a type: Literal[...] field with a default")
    RULE_TYPES[key] = model
    return model


for _model in (LabelRule, KeywordRule, SoundRule, SceneChangeRule, SpeechRule):
    register(_model)


def _by_type(value: Any, handler: ValidatorFunctionWrapHandler) -> RuleConfig:
    if isinstance(value, RuleConfig):
        return value
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in RULE_TYPES:
        shown = "no type" if kind is None else f"unknown rule type '{kind}'"
        raise ValueError(f"{shown} (choose one of {', '.join(RULE_TYPES)})")
    return RULE_TYPES[kind].model_validate(value)


RuleItem = Annotated[SerializeAsAny[RuleConfig], WrapValidator(_by_type)]
"""One entry of ``events.rules``."""
