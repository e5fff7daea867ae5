"""What a user names as input (a path or URL) resolved to a stable source id and its kind."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mmlm_stream.security.url_policy import UrlPolicy

LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp"})
NETWORK_SCHEMES = LIVE_SCHEMES | {"http", "https", "hls"}

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
SOURCE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """An input ready to open: ``url`` is what FFmpeg gets, ``path`` is set for local files.

    ``policy`` is set for a source an API caller named: every connection made for it, and
    every file, passes that policy (``container.open_container``). None: the operator's own
    input, opened as given.
    """

    url: str
    source_id: str
    path: Path | None
    scheme: str
    policy: UrlPolicy | None = None

    @property
    def is_file(self) -> bool:
        return self.path is not None

    @property
    def live_by_scheme(self) -> bool:
        return self.scheme in LIVE_SCHEMES


def scheme_of(target: str) -> str:
    scheme = urlsplit(target).scheme.lower()
    return scheme if scheme in NETWORK_SCHEMES or scheme == "file" else ""


def _sanitise(name: str) -> str:
    cleaned = _UNSAFE.sub("_", name).strip("_") or "source"
    return cleaned[:64]


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:6]


def base_source_id(target: str) -> str:
    """``clip.mkv`` for a file; host, port and path for a URL (credentials never included)."""
    scheme = scheme_of(target)
    if scheme and scheme != "file":
        parts = urlsplit(target)
        host = parts.hostname or "stream"
        port = f"_{parts.port}" if parts.port else ""
        path = parts.path.strip("/").replace("/", "_")
        return _sanitise(f"{host}{port}_{path}" if path else f"{host}{port}")
    path = Path(urlsplit(target).path if scheme == "file" else target)
    return _sanitise(path.name)


def assign_source_ids(targets: Sequence[str]) -> list[str]:
    """Stable ids; inputs that share a base name get a short hash of their full path."""
    bases = [base_source_id(target) for target in targets]
    counts = Counter(bases)
    ids = []
    for target, base in zip(targets, bases, strict=True):
        if counts[base] > 1:
            key = str(Path(target).resolve()) if not scheme_of(target) else target
            suffix = "-" + _short_hash(key)
            base = base[: 64 - len(suffix)] + suffix
        ids.append(base)
    return ids


def resolve_source(target: str, source_id: str | None = None) -> SourceSpec:
    """Turn a CLI/API input into a SourceSpec; ``source_id`` overrides the derived id."""
    if source_id is not None and not SOURCE_ID.match(source_id):
        raise ValueError(f"source id {source_id!r} must match [A-Za-z0-9_.-]{{1,64}}")
    scheme = scheme_of(target)
    sid = source_id or base_source_id(target)
    if scheme == "file":
        path = Path(urlsplit(target).path)
        return SourceSpec(url=str(path), source_id=sid, path=path, scheme="file")
    if scheme:
        return SourceSpec(url=target, source_id=sid, path=None, scheme=scheme)
    path = Path(target).expanduser()
    return SourceSpec(url=str(path), source_id=sid, path=path, scheme="file")
