"""Chaos (issue 11): one real service with two live streams, one real fault per test.

Starting Serve costs ~40 s on 2 cores, so the service is module-scoped and the faults run in
order against it. Each test makes sure both streams are healthy first (a stream an earlier
fault left broken is re-added, and that is noted in the failure message), injects its fault,
waits (bounded) until both streams are ``streaming`` and published a new window, and asserts
that no invariant of ``harness.check_invariants`` broke; a failure lists each broken
invariant by name (``windows-continuous``, ``state-consistent``, ``events-closed``, ...).

Run: ``pytest tests/chaos -m chaos`` (about 6 minutes on 2 cores: two faults last 60 s).
The chaos config is fast already (``ChaosService.build_config``: reconnect 0.02..0.04 s,
call timeout 8 s, supervisor restarts 0.5..2 s, reconcile every 2 s); other settings for a run:
``CONFIG_OVERRIDE`` below, or ``CHAOS_CONFIG='{"supervisor": {"restart_max_s": 5}}'``;
``CHAOS_RECOVERY_S`` bounds the wait for recovery (default 60).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.harness import (
    ENCODER_DEPLOYMENTS,
    ChaosService,
    Fault,
    FaultResult,
    deployed_encoders,
    run_fault,
    standard_faults,
)
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.deployments.encoder import DEPLOYMENT_NAMES
from mmlm_stream.models.registry import enabled_modalities

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.ray,
    pytest.mark.redis,
    pytest.mark.live,
]

CONFIG_OVERRIDE: dict[str, Any] = {}
"""Merged into the chaos config (``harness.apply_override``)."""
RECOVERY_S = float(os.environ.get("CHAOS_RECOVERY_S", "60"))
RESULTS: list[FaultResult] = []
"""Every fault's result in this session, for the summary table (conftest.py)."""

FAULTS = {fault.name: fault for fault in standard_faults(ENCODER_DEPLOYMENTS)}


@pytest.fixture(scope="module")
def chaos(
    tiny_models: ModelsConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChaosService]:
    workdir: Path = tmp_path_factory.mktemp("chaos")
    with ChaosService(tiny_models, config=CONFIG_OVERRIDE or None, workdir=workdir) as service:
        yield service


def _survive(service: ChaosService, fault: Fault) -> None:
    result = run_fault(service, fault, recovery_timeout_s=RECOVERY_S)
    RESULTS.append(result)
    if not result.survived:
        pytest.fail(result.message(), pytrace=False)


def test_sigkill_decoder_replica(chaos: ChaosService) -> None:
    _survive(chaos, FAULTS["kill-Decoder"])


# The encoders the chaos service deploys (the tiny set, OCR off by default): each one killed.
DEPLOYED = sorted(
    (DEPLOYMENT_NAMES[modality] for modality in enabled_modalities(ModelsConfig(set="tiny"))),
    key=lambda n: (n != "TextEncoder", n),
)


@pytest.mark.parametrize("deployment", DEPLOYED)
def test_sigkill_encoder_replica(chaos: ChaosService, deployment: str) -> None:
    assert deployment in deployed_encoders(), f"{deployment} has no live replica to kill"
    _survive(chaos, FAULTS[f"kill-{deployment}"])


def test_sigkill_aggregator_actor(chaos: ChaosService) -> None:
    _survive(chaos, FAULTS["kill-aggregator-cam1"])


def test_sigkill_ingress_replica(chaos: ChaosService) -> None:
    """The analyses the dead ingress supervised are taken over, not left running twice."""
    _survive(chaos, FAULTS["kill-Ingress"])


def test_sigkill_publisher_replica_with_a_backlog(chaos: ChaosService) -> None:
    _survive(chaos, FAULTS["kill-Publisher-backlog"])


def test_redis_stopped_60s(chaos: ChaosService) -> None:
    _survive(chaos, FAULTS["redis-stopped-60s"])


def test_redis_client_pause_10s(chaos: ChaosService) -> None:
    _survive(chaos, FAULTS["redis-paused-10s"])


def test_source_gone_60s_with_fast_reconnects(chaos: ChaosService) -> None:
    _survive(chaos, FAULTS["source-gone-60s"])


def test_hung_encoder_sigstop_20s(chaos: ChaosService) -> None:
    _survive(chaos, FAULTS["hung-VisualEncoder-20s"])


def test_flapping_source_15s(chaos: ChaosService) -> None:
    _survive(chaos, FAULTS["flapping-source-15s"])


def test_subscriber_one_schema_version_behind(chaos: ChaosService) -> None:
    _survive(chaos, FAULTS["subscriber-schema-behind"])
