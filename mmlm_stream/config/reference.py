"""docs/configuration.md, generated from the config models themselves.

``python -m mmlm_stream.config.reference > docs/configuration.md`` writes the page: one row
per key, the fields of every event rule type and watch queries, and the built-in rules with
their values. A test compares the page with this output, so the two cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from mmlm_stream.config import Config
from mmlm_stream.config.events import default_rules
from mmlm_stream.config.sinks import MqttSinkConfig, WebhookSinkConfig
from mmlm_stream.rules.registry import RULE_TYPES
from mmlm_stream.rules.watch_query import WatchQuery


def _default(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "…"
    if isinstance(value, Path) and value.is_relative_to(Path.home()):
        return "~/" + str(value.relative_to(Path.home()))
    try:
        text = json.dumps(value, default=str)
    except TypeError:
        text = str(value)
    return text if len(text) <= 40 else text[:37] + "…"


def rows(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf key."""
    instance = model()
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from rows(annotation, key + ".")
            continue
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        yield key, _default(getattr(instance, name)), description


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rule_rows(model: type[BaseModel], tag: str = "type") -> Iterator[tuple[str, str, str]]:
    """(field, default or "required", description) of one rule type (or sink kind)."""
    for name, field in model.model_fields.items():
        if name == tag:
            continue  # the heading
        default = (
            "required"
            if field.is_required()
            else _default(field.get_default(call_default_factory=True))
        )
        yield name, default, _cell(field.description or "")


def markdown() -> str:
    lines = [
        "# Configuration",
        "",
        "Generated from the config models by `python -m mmlm_stream.config.reference`; do not",
        "edit by hand (a test compares this page with the models). A YAML file given with",
        "`--config` sets any of these keys; every key can also be set by an environment",
        "variable `MMLM_<SECTION>__<KEY>` (for example `MMLM_WINDOW__HOP_S=1.0`).",
        "",
        "## Keys",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    for key, default, description in rows():
        lines.append(f"| `{key}` | `{_cell(default)}` | {description} |")
    lines += [
        "",
        "## Event rules",
        "",
        "Each entry of `events.rules` has a `type`; these are the fields of each type.",
    ]
    for model in (*RULE_TYPES.values(), WatchQuery):
        title = model.model_fields["type"].default if "type" in model.model_fields else None
        heading = f"`type: {title}`" if title else "watch queries (`events.queries`)"
        summary = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
        lines += ["", f"### {heading}", "", summary, ""]
        lines += ["| field | default | meaning |", "|---|---|---|"]
        for name, default, description in rule_rows(model):
            lines.append(f"| `{name}` | `{_cell(default)}` | {description} |")
    lines += [
        "",
        "## Sinks",
        "",
        "Each entry of `sinks` (`sinks: {NAME: {kind: ..., ...}}`) has a `kind`; these are the",
        "fields of each kind (docs/integrations.md shows them at work).",
    ]
    for model in (MqttSinkConfig, WebhookSinkConfig):
        kind = get_args(model.model_fields["kind"].annotation)[0]
        summary = " ".join((model.__doc__ or "").strip().split())
        lines += ["", f"### `kind: {kind}`", "", summary, ""]
        lines += ["| field | default | meaning |", "|---|---|---|"]
        for name, default, description in rule_rows(model, tag="kind"):
            lines.append(f"| `{name}` | `{_cell(default)}` | {description} |")
    lines += [
        "",
        "## Built-in rules",
        "",
        "What runs when `events.rules` is empty (or with `events.include_defaults: true`); a",
        "rule of the same name in `events.rules` replaces the built-in one.",
        "",
        "| name | type | values |",
        "|---|---|---|",
    ]
    for rule in default_rules():
        values = rule.model_dump(mode="json", exclude={"name", "type"})
        shown = ", ".join(
            f"{key}: {json.dumps(value)}" for key, value in values.items() if value is not None
        )
        lines.append(f"| `{rule.name}` | `{rule.type}` | {_cell(shown)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
