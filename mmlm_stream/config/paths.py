"""Config paths made absolute against this process's working directory.

Why: a config travels to processes that run elsewhere (the replicas of a ``serve`` started
in another folder, which ``describe`` reuses), where a relative ``fusion.head`` or
``decode.subtitle_files`` would name another file or none. ``~`` is expanded too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def absolute_paths(model: M, base: Path | None = None) -> M:
    """A copy of ``model`` (nested sections, lists and dicts included) whose ``Path`` values
    are absolute, relative ones joined to ``base`` (default: the working directory)."""
    base = base or Path.cwd()
    updates = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _absolute(value, base)
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model


def _absolute(value: Any, base: Path) -> Any:
    if isinstance(value, BaseModel):
        return absolute_paths(value, base)
    if isinstance(value, Path):
        path = value.expanduser()
        return value if path == value and path.is_absolute() else base / path
    if isinstance(value, list | tuple):
        items = [_absolute(item, base) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return type(value)(items) if changed else value
    if isinstance(value, dict):
        entries = {key: _absolute(item, base) for key, item in value.items()}
        changed = any(entries[key] is not item for key, item in value.items())
        return entries if changed else value
    return value
