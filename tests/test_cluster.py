"""describe --address on a two-node Ray cluster started by the test (head + one worker).

The test ends only the processes it started: each node runs ``ray start --block`` in the
foreground, and terminating that process takes its node down; ``ray stop`` (which ends every
Ray process on the machine) is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from redis_fixtures import RedisServer, free_port

from mmlm_stream.cli.sample import write_sample
from mmlm_stream.pipeline.outputs import read_windows

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.models, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")
CLI = str(Path(sys.executable).parent / "mmlm-stream")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env.update(extra)
    return env


def _start_node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [RAY, "start", "--block", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=_env(),
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _wait_for_nodes(address: str, count: int, timeout: float = 90.0) -> None:
    code = (
        "import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            [sys.executable, "-c", code, address], capture_output=True, text=True, env=_env()
        )
        if done.returncode == 0 and done.stdout.strip() == str(count):
            return
        time.sleep(2)
    raise AssertionError(f"the cluster at {address} never had {count} nodes")


def _describe(sample: Path, out: Path, redis_url: str, cache: Path, address: str | None):
    args = [CLI, "describe", str(sample), "--out", str(out), "--force", "--no-embedded-redis"]
    if address:
        args += ["--address", address]
    env = _env(REDIS_URL=redis_url, MMLM_MODELS__CACHE_DIR=str(cache))
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.timeout(1200)
def test_describe_on_two_nodes_spreads_replicas_and_matches_one_node(tmp_path: Path, model_cache):
    sample = write_sample(tmp_path / "sample.mkv").path
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    port = free_port()
    address = f"127.0.0.1:{port}"
    short_dir = tempfile.mkdtemp(prefix="mmlm-ray-", dir="/tmp")
    head = _start_node(
        [
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=1",
            "--include-dashboard=false",
            f"--temp-dir={short_dir}",  # AF_UNIX socket paths must stay under 108 bytes
        ],
        tmp_path / "head.log",
    )
    worker = None
    try:
        _wait_for_nodes(address, 1)
        worker = _start_node(
            [f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1"],
            tmp_path / "worker.log",
        )
        _wait_for_nodes(address, 2)
        cluster = _describe(sample, tmp_path / "cluster", redis.url, model_cache, address)
        assert cluster.returncode == 0, cluster.stderr[-2000:]
    finally:
        if worker is not None:
            _stop(worker)
        _stop(head)
        shutil.rmtree(short_dir, ignore_errors=True)
    single = _describe(sample, tmp_path / "single", redis.url, model_cache, None)
    redis.stop()
    assert single.returncode == 0, single.stderr[-2000:]

    summary = json.loads((tmp_path / "cluster" / "sample.mkv.summary.json").read_text())
    assert len(set(summary["nodes"].values())) == 2, summary["nodes"]
    on_cluster = read_windows(tmp_path / "cluster" / "sample.mkv.windows.jsonl")
    on_one = read_windows(tmp_path / "single" / "sample.mkv.windows.jsonl")
    assert [w.window_id for w in on_cluster] == [w.window_id for w in on_one]
    assert [w.description for w in on_cluster] == [w.description for w in on_one]
    events = [
        json.loads(x)["id"]
        for x in (tmp_path / "cluster" / "sample.mkv.events.jsonl").read_text().splitlines()
    ]
    single_events = [
        json.loads(x)["id"]
        for x in (tmp_path / "single" / "sample.mkv.events.jsonl").read_text().splitlines()
    ]
    assert events == single_events
