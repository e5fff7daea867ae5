"""`serve`: the HTTP service on a real local Ray with live streams from a real server."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from media import TcpTsServer, mpegts_bytes, write_video
from ray import serve
from redis_fixtures import RedisServer, free_port

from mmlm_stream.cli import ray_driver as driver
from mmlm_stream.config import Config
from mmlm_stream.config.api import ApiConfig
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.window import WindowConfig

pytestmark = [
    pytest.mark.live,
    pytest.mark.ray,
    pytest.mark.redis,
    pytest.mark.models,
    pytest.mark.slow,
]

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _until(check, timeout: float = 90.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def test_streams_added_removed_and_resumed_after_a_restart(tmp_path: Path, tiny_models):
    redis = RedisServer(tmp_path / "redis", appendonly=True)
    redis.start()
    source = TcpTsServer(mpegts_bytes(4.0), 4.0)
    source.start()
    config = Config(
        decode=DecodeConfig(stall_timeout_s=3),
        models=tiny_models,
        window=WindowConfig(window_s=2.0, hop_s=2.0, max_lateness_s=2.0),
        redis=RedisConfig(url=redis.url, embedded=False),
        api=ApiConfig(
            api_token=TOKEN,
            allow_local_files=True,
            local_roots=[tmp_path],
            allow_internal=["127.0.0.0/8"],
        ),
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def start() -> None:
        driver.start_ray(None)
        driver.run_service(
            config, None, redis.url, host="127.0.0.1", port=port, jobs_dir=tmp_path / "jobs"
        )

    try:
        start()
        http = httpx.Client(base_url=base, headers=AUTH, timeout=30)
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/streams").status_code == 401
        created = http.post("/streams", json={"id": "cam1", "url": source.url})
        assert created.status_code == 201, created.text
        info = _until(
            lambda: (s := http.get("/streams/cam1").json())["stats"]["windows"] >= 2 and s
        )
        assert info["state"] == "streaming" and info["last_description"]
        assert redis.client().xlen("mmlm:windows:cam1") >= 2  # published while live
        metrics = http.get("/metrics").text
        assert 'mmlm_stream_windows_total{stream="cam1"}' in metrics
        published = re.search(r"^mmlm_redis_published_total (\S+)$", metrics, re.M)
        assert published and float(published.group(1)) > 0
        assert "mmlm_encoder_batch_size_count{modality=" in metrics
        hits = http.get("/search", params={"q": "a grey picture", "top_k": 3}).json()["hits"]
        assert hits and hits[0]["source"] == "cam1"

        second = http.post("/streams", json={"id": "cam2", "url": source.url})
        assert second.status_code == 201
        assert http.delete("/streams/cam2").status_code == 204
        assert [s["id"] for s in http.get("/streams").json()] == ["cam1"]
        assert set(redis.client().hkeys("mmlm:streams")) == {b"cam1"}

        clip = write_video(tmp_path / "clip.mkv", duration_s=4.0)
        job = http.post("/jobs", json={"inputs": [str(clip)]}).json()
        done = _until(lambda: (j := http.get(f"/jobs/{job['id']}").json())["state"] == "done" and j)
        assert done["inputs"][0]["windows"] >= 2

        serve.delete(driver.APP_NAME)  # the service goes away ...
        start()  # ... and comes back: the registered stream resumes
        resumed = _until(
            lambda: (s := http.get("/streams/cam1").json())["stats"]["windows"] >= 1 and s
        )
        assert resumed["state"] == "streaming"
    finally:
        driver.shutdown()
        source.stop()
        redis.stop()
