"""`describe` reuses a running `serve` on this machine: no Ray of its own, the same files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml
from media import Cue, write_video
from redis_fixtures import RedisServer, free_port

pytestmark = [pytest.mark.ray, pytest.mark.redis, pytest.mark.models, pytest.mark.slow]

CLI = [sys.executable, "-m", "mmlm_stream.cli.main"]
RAY_DAEMONS = {"raylet", "gcs_server"}


@dataclass
class Service:
    process: subprocess.Popen[str]
    config: Path
    env: dict[str, str]
    runtime: Path
    base: str
    log: Path

    def token(self) -> str:
        (path,) = self.runtime.glob("serve-*.json")
        return json.loads(path.read_text())["token"]


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:
            return answer.status == 200 and bool(json.loads(answer.read()).get("ok"))
    except OSError:
        return False


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("reuse")
    redis = RedisServer(folder / "redis")
    redis.start()
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {"set": "tiny", "device": "cpu", "cache_dir": str(model_cache)},
                "redis": {"url": redis.url, "embedded": False},
                "window": {"window_s": 2.0, "hop_s": 1.0},
            }
        )
    )
    runtime = folder / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--config", str(config), "serve", "--port", str(port), "--jobs-dir", str(folder)]
    log = folder / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*CLI, *args], env=env, stdout=sink, stderr=subprocess.STDOUT, text=True
        )
    try:
        deadline = time.monotonic() + 240
        while not (_healthy(base) and list((runtime / "mmlm-stream").glob("serve-*.json"))):
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.5)
        yield Service(process, config, env, runtime / "mmlm-stream", base, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=90)
        finally:
            if process.poll() is None:
                process.kill()
            redis.stop()


@dataclass
class Run:
    returncode: int
    stderr: str
    ray_daemons: set[str]


def _describe(service: Service, clip: Path, out: Path, *extra: str) -> Run:
    """One `describe`, watching its child processes for Ray's daemons all along."""
    args = ["--config", str(service.config), "describe", str(clip), "--out", str(out), *extra]
    process = subprocess.Popen(
        [*CLI, *args], env=service.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seen: set[str] = set()
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()))
    reader.start()
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            seen |= {child.name() for child in watched.children(recursive=True)} & RAY_DAEMONS
        except psutil.Error:
            pass
        time.sleep(0.1)
    reader.join()
    return Run(process.wait(timeout=300), "".join(stderr), seen)


def _records(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        row.pop("published_at", None)
    return rows


def _summary(path: Path) -> dict:
    summary = json.loads(path.read_text())
    for stamp in ("created_at", "nodes"):  # when, and which Ray's node ids
        summary.pop(stamp)
    return summary


def test_describe_reuses_the_running_service_and_writes_what_a_cold_run_writes(
    service: Service, tmp_path: Path
):
    clip = write_video(
        tmp_path / "clip.mkv", duration_s=6.0, subtitles=[Cue(0.5, 2.5, "Hello there")]
    )
    warm = _describe(service, clip, tmp_path / "warm")
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert f"reusing the running service (pid {service.process.pid}," in warm.stderr
    assert warm.ray_daemons == set(), "describe started a Ray of its own"
    assert service.token() not in warm.stderr

    cold = _describe(service, clip, tmp_path / "cold", "--fresh")
    assert cold.returncode == 0, cold.stderr[-2000:]
    assert "reusing" not in cold.stderr
    assert cold.ray_daemons == RAY_DAEMONS  # what the watch above would have seen

    name = "clip.mkv"
    for kind in ("windows.jsonl", "events.jsonl"):
        warm_rows = _records(tmp_path / "warm" / f"{name}.{kind}")
        assert warm_rows == _records(tmp_path / "cold" / f"{name}.{kind}"), kind
    assert len(_records(tmp_path / "warm" / f"{name}.windows.jsonl")) >= 5
    for kind in ("srt", "vtt"):
        warm_text = (tmp_path / "warm" / f"{name}.{kind}").read_text()
        assert warm_text == (tmp_path / "cold" / f"{name}.{kind}").read_text(), kind
    summary = _summary(tmp_path / "warm" / f"{name}.summary.json")
    assert summary == _summary(tmp_path / "cold" / f"{name}.summary.json")

    assert _healthy(service.base), "the service went down"
    assert service.process.poll() is None


def test_an_incompatible_service_is_passed_over_in_one_line(service: Service, tmp_path: Path):
    clip = write_video(tmp_path / "clip.mkv", duration_s=2.0)
    other = tmp_path / "other.yaml"
    settings = yaml.safe_load(service.config.read_text())
    settings["redis"]["prefix"] = "elsewhere"  # the service's Publisher writes to "mmlm"
    other.write_text(yaml.safe_dump(settings))
    run = _describe(
        Service(service.process, other, service.env, service.runtime, service.base, service.log),
        clip,
        tmp_path / "out",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if "reusing" in line]
    assert lines == [
        f"mmlm-stream: not reusing a running service: the service of pid "
        f"{service.process.pid} runs another configuration (models, Redis, Serve options or "
        "version differ); starting a private Ray"
    ]
    assert run.ray_daemons == RAY_DAEMONS


def test_a_stopped_service_removes_its_record_and_never_logged_its_token(service: Service):
    token = service.token()
    service.process.terminate()
    assert service.process.wait(timeout=90) == 0
    assert list(service.runtime.glob("serve-*.json")) == []
    assert token not in service.log.read_text()
