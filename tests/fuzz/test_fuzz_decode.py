"""Over 1,000 mutated inputs through the decode operator: each decodes, or fails with one
line naming the input; no other exception, no hang, no window per hop across a gap, and the
decoding process stays under ``MAX_RSS_MB``.

Hypothesis draws the mutations (``mutate.py``), derandomized so CI sees the same inputs
every run; a failure prints the exact mutation. The decoding runs in ``worker.py``'s child
process, which a hang (no answer in ``BUDGET_S``) gets killed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from . import mutate
from .worker import DecodeWorker, Outcome

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]

BUDGET_S = 20.0
"""A decode that has not answered after this long is a hang (clean inputs take ~10 ms)."""
SLOW_S = 10.0
MAX_RSS_MB = 1500.0
MAX_WINDOWS = 200
"""A 1.5 s seed makes a window or two; gaps are skipped past ``decode.max_gap_s`` (60 s:
30 empty windows at most per gap), so more than this means one window per hop of a jump."""
QUOTAS = {"bytes": 480, "timestamps": 250, "headers": 120, "subtitles": 80, "noise": 50}
"""Examples per family: with the 23 of ``corpus()``, 1,003 inputs in all (about 15 s)."""


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return mutate.write_seeds(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecodeWorker]:
    log = tmp_path_factory.mktemp("worker") / "stderr.log"
    with DecodeWorker(budget_s=BUDGET_S, log=log) as decoder:
        yield decoder
    assert decoder.max_rss_mb < MAX_RSS_MB, f"decoder peak RSS {decoder.max_rss_mb:.0f} MB"


def check(outcome: Outcome, path: Path) -> None:
    """What every input must give, whatever it holds."""
    assert outcome.outcome in ("ok", "error"), f"{outcome.outcome}: {outcome.message}"
    if outcome.outcome == "error":
        message = outcome.message or ""
        assert message.startswith(str(path)) and len(message) > len(str(path)) + 2, message
        assert "\n" not in message, message
    for warning in outcome.warnings:
        assert warning and "\n" not in warning, warning
    assert outcome.windows <= MAX_WINDOWS, f"{outcome.windows} windows"
    assert outcome.seconds < SLOW_S, f"took {outcome.seconds:.1f}s"
    assert outcome.max_rss_mb < MAX_RSS_MB, f"peak RSS {outcome.max_rss_mb:.0f} MB"


class Run:
    """Writes one mutated input at a time into ``folder``, decodes it, removes it."""

    def __init__(self, seeds: dict[str, Path], worker: DecodeWorker, folder: Path) -> None:
        self.seeds, self.worker, self.folder = seeds, worker, folder
        self.outcomes: Counter[str] = Counter()

    def __call__(self, mutation: mutate.Mutation) -> None:
        stem = self.folder / f"in{sum(self.outcomes.values())}"
        path = mutation.write(self.seeds, stem)
        try:
            outcome = self.worker.decode(path)
            self.outcomes[outcome.outcome] += 1
            check(outcome, path)
        finally:
            for leftover in self.folder.glob(stem.name + ".*"):
                leftover.unlink()


def _fuzz(family: str, seeds: dict[str, Path], worker: DecodeWorker, folder: Path) -> Counter:
    run = Run(seeds, worker, folder)

    @settings(
        max_examples=QUOTAS[family],
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],  # no shrinking: a hang would cost BUDGET_S per try
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutate.FAMILIES[family])
    def one(mutation: mutate.Mutation) -> None:
        run(mutation)

    one()
    total = sum(run.outcomes.values())
    assert total >= QUOTAS[family], f"only {total} {family} inputs ran"
    return run.outcomes


@pytest.mark.parametrize("family", list(QUOTAS))
def test_mutated_inputs_decode_or_fail_with_one_line(
    family: str, seeds: dict[str, Path], worker: DecodeWorker, tmp_path: Path
):
    outcomes = _fuzz(family, seeds, worker, tmp_path)
    assert set(outcomes) <= {"ok", "error"}
    if family == "noise":  # noise is no media, empty files least of all
        assert outcomes["error"] > outcomes["ok"]


def test_the_issues_cases_decode_or_fail_with_one_line(
    seeds: dict[str, Path], worker: DecodeWorker, tmp_path: Path
):
    run = Run(seeds, worker, tmp_path)
    for mutation in mutate.corpus():
        run(mutation)
    assert run.outcomes["ok"] and run.outcomes["error"]
