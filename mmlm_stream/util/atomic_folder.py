"""A folder that appears whole or not at all: how every model cache entry is built.

Model folders are shared by every process on the machine (replicas, the CLI, tests) and may
be built by several of them at once. Each builder fills a private folder beside the target
and renames it into place, so a reader never sees a half-written model; the first rename
wins and a later builder keeps what it finds when it is complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_folder(
    target: Path,
    fill: Callable[[Path], None],
    *,
    complete: Callable[[Path], bool],
    replace: bool = False,
) -> bool:
    """Build ``target`` by ``fill(staging)``; True when this call put it in place.

    ``replace``: a folder already at ``target`` (stale or corrupt: the caller checked) is
    moved aside first, so readers holding it keep their files. Otherwise an existing
    ``target`` that ``complete`` accepts stands, and anything else is an error.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared
        if replace and target.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            target.rename(stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not complete(target):
                raise
            return False  # another process finished first
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
