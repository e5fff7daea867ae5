"""Mutated inputs as one job of a running service, beside a live stream.

The service is the chaos harness's (real Redis, local Ray, ``serve`` with the tiny models,
one live MPEG-TS stream ``cam1`` over TCP), with local files allowed under the inputs'
folder and ``jobs.max_duration_s`` of 20 s. The job holds the issue's cases, a few draws of
every mutation family and an HTTP stream that never ends. While it runs, ``/healthz`` must
answer 200, ``cam1`` must stay ``streaming`` and the Decoder replica under ``MAX_RSS_MB``;
at the end every input is ``done`` or ``failed`` with a one-line error naming it, every
input the decode operator rejects on its own is ``failed``, and the endless one ended at
``jobs.max_duration_s``. Starts Ray: about 2 minutes on 2 cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx2 as httpx
import psutil
import pytest
from chaos.harness import ChaosService, replica_actors
from media import mpegts_bytes

from mmlm_stream.config.models import ModelsConfig

from . import mutate
from .endless import EndlessTs
from .worker import DecodeWorker

pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.slow,
    pytest.mark.ray,
    pytest.mark.redis,
    pytest.mark.live,
    pytest.mark.models,
]

PER_FAMILY = 4
MAX_DURATION_S = 20.0
MAX_RSS_MB = 1500.0
JOB_TIMEOUT_S = 420.0


def _decoder_rss_mb() -> float:
    total = 0.0
    for actor in replica_actors("Decoder"):
        if actor.pid:
            try:
                total += psutil.Process(actor.pid).memory_info().rss / 2**20
            except psutil.Error:
                pass  # a replica being replaced
    return total


def test_bad_job_inputs_fail_with_one_line_while_a_live_stream_keeps_streaming(
    tmp_path: Path, tiny_models: ModelsConfig
):
    folder = tmp_path / "inputs"
    folder.mkdir()
    seeds = mutate.write_seeds(tmp_path / "seeds")
    mutations = mutate.corpus()
    for family in mutate.FAMILIES.values():
        mutations += mutate.draw(family, PER_FAMILY)
    paths = [m.write(seeds, folder / f"in{n:03d}") for n, m in enumerate(mutations)]
    with DecodeWorker() as worker:
        rejected = {str(p) for p in paths if worker.decode(p).outcome == "error"}
    override = {
        "api": {"allow_local_files": True, "local_roots": [str(folder)]},
        "jobs": {"max_duration_s": MAX_DURATION_S},
    }
    with (
        EndlessTs(mpegts_bytes(2.0, 64, 48, 10)) as endless,
        ChaosService(
            tiny_models, config=override, sources=("cam1",), workdir=tmp_path / "svc"
        ) as service,
    ):
        assert service.http is not None
        targets = [str(p) for p in paths] + [endless.url]
        answer = service.http.post("/jobs", json={"inputs": targets})
        assert answer.status_code in (200, 201, 202), answer.text
        job_id = answer.json()["id"]
        states, health, rss = [], [], []
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            job = service.http.get(f"/jobs/{job_id}").json()
            health.append(httpx.get(f"{service.base_url}/healthz", timeout=10).status_code)
            states.append(service.view("cam1").api_state)
            rss.append(_decoder_rss_mb())
            if job["state"] in ("done", "partial", "failed"):
                break
            time.sleep(2)
        else:
            pytest.fail(f"job not finished in {JOB_TIMEOUT_S:.0f}s: {job}")
        assert set(health) == {200}, health
        assert set(states) == {"streaming"}, states
        assert max(rss) < MAX_RSS_MB, f"Decoder RSS peaked at {max(rss):.0f} MB"
        service.wait_streaming(min_windows=1, timeout=30)

    by_input = {item["input"]: item for item in job["inputs"]}
    assert set(by_input) == set(targets)
    for target, item in by_input.items():
        assert item["state"] in ("done", "failed"), item
        if item["state"] == "failed":
            error = item["error"] or ""
            assert error.startswith(target) and "\n" not in error, item
    assert {t for t in rejected if by_input[t]["state"] != "failed"} == set()
    endless_error = by_input[endless.url]["error"] or ""
    assert f"longer than jobs.max_duration_s ({MAX_DURATION_S:g}s" in endless_error
    assert sum(item["state"] == "done" for item in by_input.values()) > len(targets) // 4
