"""The runtime record through which a running ``mmlm-stream serve`` lets ``describe`` reuse it.

Why: a cold ``describe`` spends most of its first half minute starting Ray, deploying the
application and loading every model; a ``serve`` on the same machine has all of that
running. Its private Ray uses token auth with a random token that lives only in its
environment, so ``serve`` writes what a later ``describe`` of the same user needs to join it
(pid, GCS address, token, application) to ``serve-<pid>.json`` in a per-user runtime folder
(``$XDG_RUNTIME_DIR/mmlm-stream``, else ``~/.cache/mmlm-stream/run``; folder 0700, file 0600)
and removes it when it stops.

A reader trusts only a plain file of its own user that nobody else can read or write; drops
a stale one (the process is gone, or its pid now belongs to another process); and takes one
only when its fingerprint (everything bound at deploy time that decides the output: the
models config, the Redis config and URL the Publisher writes to, the Serve options, the
versions of the code) equals its own. The token is never printed: ``ServiceRecord``'s repr
leaves it out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from mmlm_stream import __version__
from mmlm_stream.config import Config
from mmlm_stream.config.paths import absolute_paths

SCHEMA = "mmlm.service-record/1"
PREFIX = "serve-"
# Process start times (psutil) of one process agree exactly; a reused pid differs by far more.
_START_TOLERANCE_S = 0.5


@dataclass(frozen=True)
class ServiceRecord:
    """How to join one running service; ``started`` (the process's start time) tells its
    pid apart from a later process's that got the same number."""

    pid: int
    started: float
    gcs_address: str
    app: str
    fingerprint: str
    url: str
    token: str = field(repr=False)


@dataclass
class Lookup:
    """The record to reuse (None: none fits) and one short note per record passed over."""

    record: ServiceRecord | None
    notes: list[str] = field(default_factory=list)


def runtime_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "mmlm-stream"
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mmlm-stream" / "run"


def fingerprint(config: Config, redis_url: str | None, deployments: dict[str, Any]) -> str:
    """What a describe and a service must share for the service to do the describe's work
    exactly as a fresh application of the describe's own would (paths made absolute, so one
    relative path in two folders is two different configs)."""
    facts = {
        "models": absolute_paths(config.models).model_dump(mode="json"),
        "redis": absolute_paths(config.redis).model_dump(mode="json"),
        "redis_url": redis_url or "",
        "deployments": deployments,
        "mmlm_stream": [__version__, str(Path(__file__).resolve().parent)],
        "ray": metadata.version("ray"),
        "python": [sys.version, sys.prefix],
    }
    text = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch); None when it is gone."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def write(record: ServiceRecord, directory: Path | None = None) -> Path:
    """Write ``record`` (atomically, mode 0600) and return its path."""
    folder = directory or runtime_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{PREFIX}{record.pid}.json"
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"schema": SCHEMA, **asdict(record)}, handle)
    os.replace(tmp, path)
    return path


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


class _Untrusted(Exception):
    """A record file this user must not act on; the message says why."""


def _read_trusted(path: Path) -> ServiceRecord:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise _Untrusted(f"unreadable ({exc.strerror or exc})") from None
    with os.fdopen(fd, encoding="utf-8") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _Untrusted("not a plain file")
        if info.st_uid != os.getuid():
            raise _Untrusted("owned by another user")
        if info.st_mode & 0o077:
            raise _Untrusted(f"open to other users (mode {stat.S_IMODE(info.st_mode):04o})")
        try:
            data = json.load(handle)
            if data.pop("schema") != SCHEMA:
                raise ValueError
            record = ServiceRecord(**data)
            if not (isinstance(record.pid, int) and isinstance(record.token, str)):
                raise ValueError
        except (ValueError, TypeError, KeyError, AttributeError):
            raise _Untrusted("not a service record") from None
    return record


def find(want: str, directory: Path | None = None) -> Lookup:
    """The newest trusted, live record whose fingerprint is ``want``; stale records are
    removed on the way."""
    folder = directory or runtime_dir()
    lookup = Lookup(None)
    try:
        paths = sorted(folder.glob(f"{PREFIX}*.json"), key=_mtime, reverse=True)
    except OSError:
        return lookup
    for path in paths:
        try:
            record = _read_trusted(path)
        except _Untrusted as exc:
            lookup.notes.append(f"ignored {path}: {exc}")
            continue
        started = process_started(record.pid)
        if started is None or abs(started - record.started) > _START_TOLERANCE_S:
            lookup.notes.append(f"the service of pid {record.pid} is gone (stale record removed)")
            remove(path)
            continue
        if record.fingerprint != want:
            lookup.notes.append(
                f"the service of pid {record.pid} runs another configuration "
                "(models, Redis, Serve options or version differ)"
            )
            continue
        lookup.record = record
        return lookup
    return lookup


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0
