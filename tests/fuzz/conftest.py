"""Fuzz tests: mutated media through the decoder, then some as jobs of a running service.

``media`` and ``redis_fixtures`` live in tests/ (on ``sys.path`` already in "prepend" import
mode, as for tests/chaos); the insert keeps that true under any import mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
for folder in (_TESTS, _TESTS / "chaos"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
