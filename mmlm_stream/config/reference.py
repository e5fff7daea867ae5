"""The README's configuration reference, generated from the config models themselves.

``python -m mmlm_stream.config.reference`` prints one Markdown row per key; a test checks
that the README lists every key, so the two cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mmlm_stream.config import Config


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


def markdown() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, description in rows():
        shown = default.replace("|", "\\|")
        lines.append(f"| `{key}` | `{shown}` | {description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
