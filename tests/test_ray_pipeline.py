"""The Serve application end to end on a real local Ray, publishing to a real Redis."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import ray
import real_speech
import yaml
from ray.serve.schema import ServeDeploySchema
from redis_fixtures import RedisServer

from mmlm_stream.bus.client import Subscriber
from mmlm_stream.cli import ray_driver as driver
from mmlm_stream.cli.sample import write_sample
from mmlm_stream.config import Config
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.deploy.serve_config import default_serve_config
from mmlm_stream.deployments.app import bind_encoders
from mmlm_stream.deployments.encoder import DEPLOYMENT_NAMES, SHARED_DEPLOYMENT
from mmlm_stream.models.registry import enabled_modalities
from mmlm_stream.pipeline.outputs import read_windows

DEPLOYMENTS = Path(__file__).resolve().parent.parent / "deployments"


@pytest.mark.parametrize("name", ["local-cpu.yaml", "local-cpu-split.yaml", "gpu.yaml"])
def test_serve_configs_validate_against_rays_schema(name: str):
    data = yaml.safe_load((DEPLOYMENTS / name).read_text())
    ServeDeploySchema.model_validate(data)
    names = {d["name"] for d in data["applications"][0]["deployments"]}
    per_role = {DEPLOYMENT_NAMES[modality] for modality in enabled_modalities(Config().models)}
    built = {SHARED_DEPLOYMENT} if name == "local-cpu.yaml" else per_role
    assert names == {"Decoder", "Publisher", *built}  # serve deploy rejects any other name
    assert default_serve_config().name == "local-cpu.yaml"


def test_cpu_encoders_share_one_replica_unless_a_role_has_its_own_deployment():
    config = Config()
    modalities = [modality.value for modality in enabled_modalities(config.models)]
    shared = bind_encoders(config, {SHARED_DEPLOYMENT: {}})
    assert set(shared) == set(modalities)
    assert len({id(bound) for bound in shared.values()}) == 1
    split = bind_encoders(config, {SHARED_DEPLOYMENT: {}, "SpeechEncoder": {}})
    assert len({id(bound) for bound in split.values()}) == 2
    assert split["speech"] is not split["visual"]
    assert len({id(bound) for bound in bind_encoders(config, {}).values()}) == len(modalities)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    folder = tmp_path_factory.mktemp("ray-pipeline")
    server = RedisServer(folder / "redis", appendonly=True)
    server.start()
    sample = write_sample(folder / "sample.mkv")
    config = Config(
        models=ModelsConfig(set="default", device="cpu", cache_dir=model_cache),
        redis=RedisConfig(url=server.url, embedded=False),
    )
    yield folder, server, sample, config
    driver.shutdown()
    server.stop()


def _describe(env, out: Path, inputs: list[str] | None = None, force: bool = True):
    _, server, sample, config = env
    return driver.describe(
        inputs or [str(sample.path)], out, config, redis_url=server.url, force=force
    )


def _entries(server: RedisServer, key: str) -> list[dict]:
    client = server.client()
    return [json.loads(fields[b"json"]) for _, fields in client.xrange(key)]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.ray
@pytest.mark.redis
@pytest.mark.models
@pytest.mark.slow
def test_describe_publishes_every_window_and_event_exactly_once(env):
    folder, server, sample, _ = env
    out = folder / "out1"
    report = _describe(env, out)
    assert report.exit_code == 0 and report.done == ["sample.mkv"]
    windows = read_windows(out / "sample.mkv.windows.jsonl")
    events = _lines(out / "sample.mkv.events.jsonl")
    assert windows[0].start == 0.0 and windows[-1].end >= sample.duration
    published = _entries(server, "mmlm:windows:sample.mkv")
    assert sorted(w["window_id"] for w in published) == sorted(w.window_id for w in windows)
    assert all(w["published_at"].endswith("Z") for w in published)
    per_source = _entries(server, "mmlm:events:sample.mkv")
    assert sorted(e["id"] for e in per_source) == sorted(e["id"] for e in events)
    assert {e["type"] for e in events} >= {"speech", "sound", "scene_change"}

    again = _describe(env, out)  # a re-run overwrites files and adds nothing to Redis
    assert again.exit_code == 0
    assert len(_entries(server, "mmlm:windows:sample.mkv")) == len(published)
    assert len(_entries(server, "mmlm:events")) == len(per_source)

    subscriber = Subscriber(server.url, group="tests", consumer="c1", config=RedisConfig())
    received = []
    for event in subscriber.iter_events(block_ms=500, from_start=True):
        received.append(event.id)
        if len(received) == len(events):
            subscriber.stop()
    assert sorted(received) == sorted(e["id"] for e in events)
    pending = server.client().xpending("mmlm:events", "tests")
    assert pending["pending"] == 0


def _in_background(env, out: Path) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        result["report"] = _describe(env, out)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    partial = out / "sample.mkv.windows.jsonl.partial"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if partial.exists() and len(partial.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the job never produced windows")
    return thread, result


@pytest.mark.ray
@pytest.mark.redis
@pytest.mark.models
@pytest.mark.slow
def test_redis_restart_in_the_middle_of_a_job_loses_nothing(env):
    folder, server, _, _ = env
    out = folder / "out-restart"
    server.client().delete("mmlm:windows:sample.mkv")
    for key in server.client().scan_iter("mmlm:seen:window:*"):
        server.client().delete(key)
    thread, result = _in_background(env, out)
    server.stop()
    time.sleep(2.0)
    server.start()
    thread.join(180)
    assert result["report"].exit_code == 0
    windows = read_windows(out / "sample.mkv.windows.jsonl")
    published = [w["window_id"] for w in _entries(server, "mmlm:windows:sample.mkv")]
    assert sorted(published) == sorted(w.window_id for w in windows)


@pytest.mark.ray
@pytest.mark.redis
@pytest.mark.models
@pytest.mark.slow
def test_a_killed_encoder_replica_does_not_lose_the_job(env):
    folder, _, sample, _ = env
    out = folder / "out-kill"
    thread, result = _in_background(env, out)
    replicas = [  # the default Serve config runs every encoder in one "Encoders" replica
        a for a in ray.util.list_named_actors(all_namespaces=True) if SHARED_DEPLOYMENT in a["name"]
    ]
    assert replicas
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]))
    thread.join(300)
    assert result["report"].exit_code == 0
    windows = read_windows(out / "sample.mkv.windows.jsonl")
    assert windows[0].start == 0.0 and windows[-1].end >= sample.duration
    assert all(w.visual or w.end > sample.duration for w in windows)


@pytest.mark.ray
@pytest.mark.redis
@pytest.mark.models
@pytest.mark.slow
def test_a_corrupt_file_among_good_ones_fails_alone_with_exit_code_1(env):
    folder, _, sample, _ = env
    out = folder / "out-mixed"
    broken = folder / "broken.mp4"
    broken.write_bytes(b"\x00" * 5000)
    report = _describe(env, out, [str(sample.path), str(broken)])
    assert report.exit_code == 1
    assert report.done == ["sample.mkv"]
    error = json.loads((out / "broken.mp4.error.json").read_text())
    assert "broken.mp4" in error["reason"] and "\n" not in error["reason"]
    assert (out / "sample.mkv.summary.json").exists()
    skipped = _describe(env, out, [str(sample.path)], force=False)
    assert skipped.skipped == ["sample.mkv"]


@pytest.mark.ray
@pytest.mark.redis
@pytest.mark.models
@pytest.mark.slow
def test_recorded_speech_loses_no_utterance_through_the_served_recogniser(env):
    """The Serve path merges callers' utterances into one batch: an utterance the recogniser
    heard as two sentences used to cost the batch's last sentence."""
    if not real_speech.ensure_available():
        pytest.skip(f"recorded prompts missing: {real_speech.install_hint()}")
    folder = env[0]
    clip = real_speech.build_clip(folder / "speech.mkv")
    out = folder / "out-speech"
    report = _describe(env, out, [str(clip.path)])
    assert report.exit_code == 0
    summary = json.loads((out / "speech.mkv.summary.json").read_text())
    heard = [(u["start"], u["end"], u["text"]) for u in summary["utterances"]]
    assert real_speech.lost(clip.utterances, heard) == []
