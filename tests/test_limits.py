"""Caps on streams and jobs: past them the backend says so (429) instead of queueing work
that would sit in ``connecting`` forever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_api import make_client

from mmlm_stream.bus.transport import NullPublisher
from mmlm_stream.config import Config
from mmlm_stream.config.api import ApiConfig
from mmlm_stream.pipeline.jobs import AnalysisRequest, JobMessage
from mmlm_stream.service.backend import PipelineBackend
from mmlm_stream.service.protocol import JobRequest, StreamSpec, TooMany


async def _never(request: AnalysisRequest) -> AsyncIterator[JobMessage]:
    await asyncio.Event().wait()
    yield  # type: ignore[misc]


def _backend(tmp_path: Path, **api: int) -> PipelineBackend:
    config = Config(api=ApiConfig(**api))
    return PipelineBackend(
        config, _never, lambda texts: [], NullPublisher(), NullPublisher(), None, tmp_path
    )


def test_streams_past_api_max_streams_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = _backend(tmp_path, max_streams=2)
        await backend.add_stream(StreamSpec(id="a", url="rtsp://cam.example/a"))
        await backend.add_stream(StreamSpec(id="b", url="rtsp://cam.example/b"))
        with pytest.raises(TooMany, match=r"api\.max_streams"):
            await backend.add_stream(StreamSpec(id="c", url="rtsp://cam.example/c"))
        await backend.remove_stream("a")
        await backend.add_stream(StreamSpec(id="c", url="rtsp://cam.example/c"))
        await backend.close()

    asyncio.run(scenario())


def test_jobs_past_api_max_jobs_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = _backend(tmp_path, max_jobs=1)
        backend.submit_job(JobRequest(inputs=["https://archive.example/a.mp4"]))
        with pytest.raises(TooMany, match=r"api\.max_jobs"):
            backend.submit_job(JobRequest(inputs=["https://archive.example/b.mp4"]))
        await backend.close()

    asyncio.run(scenario())


class _Full:
    def add_stream(self, spec: StreamSpec) -> None:
        raise TooMany("the service runs 64 streams, its limit (api.max_streams)")


def test_a_reached_limit_is_429_with_the_reason() -> None:
    with make_client(_Full()) as client:
        answer = client.post("/streams", json={"url": "rtsp://cam.example/a"})
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "30"
    assert answer.json() == {"detail": "the service runs 64 streams, its limit (api.max_streams)"}


def test_a_job_reads_camera_urls_once_so_the_job_limits_end_it(tmp_path: Path) -> None:
    seen: list[AnalysisRequest] = []

    async def record(request: AnalysisRequest) -> AsyncIterator[JobMessage]:
        seen.append(request)
        raise RuntimeError("no pipeline here")
        yield  # type: ignore[unreachable]

    async def scenario() -> None:
        config = Config(api=ApiConfig())
        bus = NullPublisher()
        backend = PipelineBackend(config, record, lambda texts: [], bus, bus, None, tmp_path)
        job = backend.submit_job(JobRequest(inputs=["rtsp://cam.example/live"]))
        for _ in range(100):
            if backend.get_job(job.id).state not in ("queued", "running"):
                break
            await asyncio.sleep(0.02)
        await backend.close()

    asyncio.run(scenario())
    assert len(seen) == 1 and seen[0].untrusted
    assert seen[0].config.decode.live is False
