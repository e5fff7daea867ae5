"""Secrets never leave: passwords planted in stream and job URLs appear in no API answer,
job file, Redis key or Ray session log of a real `serve`, and a stream whose URL holds a
password still resumes after a restart (the registry keeps it sealed, not in the clear)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2 as httpx
import pytest
import ray
from media import TcpTsServer, mpegts_bytes
from ray import serve
from redis_fixtures import RedisServer, free_port
from test_ssrf import _Server

from mmlm_stream.cli import ray_driver as driver
from mmlm_stream.config import Config
from mmlm_stream.config.api import ApiConfig
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.window import WindowConfig

pytestmark = [pytest.mark.ray, pytest.mark.redis, pytest.mark.live, pytest.mark.slow]

TOKEN = "tok-for-secrets-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PLANTED = ("Pl4nted-Stream-Pw", "Pl4nted-Rtsp-Pw", "Pl4nted-Job-Pw", "Pl4nted-Missing-Pw")


def _until(check, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    raise AssertionError("condition not reached in time")


def _redis_dump(client) -> bytes:
    """Every value of every key, whatever its type."""
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        out.append(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"hash":
            out.extend(b"%s=%s" % item for item in client.hgetall(key).items())
        elif kind == b"stream":
            for _, fields in client.xrange(key):
                out.extend(b"%s=%s" % item for item in fields.items())
        elif kind == b"list":
            out.extend(client.lrange(key, 0, -1))
        elif kind == b"set":
            out.extend(client.smembers(key))
        elif kind == b"zset":
            out.extend(client.zrange(key, 0, -1))
    return b"\n".join(out)


def _files_holding(folder: Path, needles: tuple[str, ...]) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {n}" for n in needles if n.encode() in data]
    return found


def test_planted_passwords_appear_nowhere(tmp_path: Path, tiny_models) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    source = TcpTsServer(mpegts_bytes(4.0), 4.0)
    source.start()
    media = _Server("127.0.0.1", {"/ok.ts": (200, {}, mpegts_bytes(3.0))})
    closed = free_port()
    stream_pw, rtsp_pw, job_pw, missing_pw = PLANTED
    config = Config(
        decode=DecodeConfig(stall_timeout_s=3, open_timeout_s=3),
        models=tiny_models,
        window=WindowConfig(window_s=2.0, hop_s=2.0, max_lateness_s=2.0),
        redis=RedisConfig(url=redis.url, embedded=False),
        api=ApiConfig(api_token=TOKEN, allow_internal=["127.0.0.0/8"]),
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    jobs = tmp_path / "jobs"

    def start(config: Config = config) -> None:
        driver.start_ray(None)
        driver.run_service(config, None, redis.url, host="127.0.0.1", port=port, jobs_dir=jobs)

    live_url = source.url.replace("tcp://", f"tcp://cam:{stream_pw}@")
    try:
        start()
        http = httpx.Client(base_url=base, headers=AUTH, timeout=30)
        assert http.post("/streams", json={"id": "cam", "url": live_url}).status_code == 201
        dead = f"rtsp://admin:{rtsp_pw}@127.0.0.1:{closed}/cam"
        assert http.post("/streams", json={"id": "dead", "url": dead}).status_code == 201
        inputs = [
            f"http://u:{job_pw}@127.0.0.1:{media.port}/ok.ts",
            f"http://u:{missing_pw}@127.0.0.1:{media.port}/missing.ts",
        ]
        job = http.post("/jobs", json={"inputs": inputs}).json()
        done = _until(
            lambda: (j := http.get(f"/jobs/{job['id']}").json())["state"] == "partial" and j
        )
        assert [item["state"] for item in done["inputs"]] == ["done", "failed"]
        _until(lambda: http.get("/streams/cam").json()["stats"]["windows"] >= 2)
        logs = Path(ray._private.worker._global_node.get_session_dir_path())
        # The failed connects were logged, with the URL redacted (so the logs are the ones).
        _until(lambda: _files_holding(logs, (f"rtsp://***@127.0.0.1:{closed}/cam",)))
        answers = [
            http.get("/streams").text,
            http.get("/streams/dead").text,
            http.get(f"/jobs/{job['id']}").text,
            http.get("/metrics").text,
        ]
        assert "***@127.0.0.1" in answers[0]

        # Restarted under a stricter policy, the registered streams are checked again: refused.
        serve.delete(driver.APP_NAME)
        strict = config.model_copy(
            update={"api": config.api.model_copy(update={"allow_internal": []})}
        )
        start(strict)
        failed = _until(lambda: (s := http.get("/streams/cam").json())["state"] == "failed" and s)
        assert failed["reason"].endswith("refused by the URL policy")
        answers.append(http.get("/streams").text)

        serve.delete(driver.APP_NAME)  # the service restarts: the sealed URL resumes the stream
        start()
        resumed = _until(
            lambda: (s := http.get("/streams/cam").json())["stats"]["windows"] >= 1 and s
        )
        assert resumed["state"] == "streaming"
        answers.append(http.get("/streams").text)
        time.sleep(2)  # let the log monitor flush the replicas' last lines
        for answer in answers:
            assert not [n for n in PLANTED if n in answer], answer
        assert not _files_holding(jobs, PLANTED)
        dump = _redis_dump(redis.client())
        assert b"sealed_url" in dump and b"mmlm:windows:cam" in dump
        assert not [n for n in PLANTED if n.encode() in dump]
        assert not _files_holding(logs, PLANTED)
        assert media.requests.count("/ok.ts") >= 1  # the job really fetched its input
    finally:
        driver.shutdown()
        media.stop()
        source.stop()
        redis.stop()
