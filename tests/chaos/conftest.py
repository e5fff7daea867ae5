"""Chaos tests: real faults against a real service (see harness.py).

``media`` and ``redis_fixtures`` live in tests/; pytest puts tests/ on ``sys.path`` for this
package already (rootdir conftest, "prepend" import mode: tests/ is the first folder above
tests/chaos/ without an ``__init__.py``); the insert below keeps that true under any import
mode and for a harness imported from elsewhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos: injects real faults (SIGKILL, Redis down, source gone) into a running "
        "service; minutes",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One table of what each fault did, after the run (also when tests failed)."""
    module = sys.modules.get("chaos.test_chaos")  # only when it ran in this session
    results = getattr(module, "RESULTS", None)
    if not results:
        return
    write = terminalreporter.write_line
    terminalreporter.section("chaos: faults")
    write(
        f"{'fault':28s} {'recovered':9s} {'seconds':>7s} {'lost':>4s} {'dups':>4s} "
        f"{'orphans':>7s} {'max_lag_s':>9s} violations"
    )
    for r in results:
        seconds = f"{r.recovery_s:.1f}" if r.recovery_s is not None else "-"
        write(
            f"{r.fault:28s} {'yes' if r.recovered else 'no':9s} {seconds:>7s} "
            f"{r.violations.windows_lost:>4d} {r.violations.duplicates:>4d} "
            f"{r.violations.orphaned_events:>7d} {r.violations.max_lag_s:>9.1f} "
            f"{len(r.violations)}"
        )
    for r in results:  # what the injectors measured (backlog, reconnect attempts) and resets
        for note in r.notes:
            write(f"{r.fault}: {note}")
