"""`serve` with an MQTT sink: a live stream of the bundled sample (a person, an alarm-like
beep, speech) reaches a real Mosquitto as events, retained state and Home Assistant entities."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import av
import httpx2 as httpx
import pytest
from media import TcpTsServer
from mqtt_fixtures import Recorder, mosquitto, retained  # noqa: F401
from redis_fixtures import RedisServer, free_port
from test_sinks import check_discovery

from mmlm_stream.cli import ray_driver as driver
from mmlm_stream.cli.sample import write_sample
from mmlm_stream.config import Config

pytestmark = [
    pytest.mark.live,
    pytest.mark.ray,
    pytest.mark.redis,
    pytest.mark.models,
    pytest.mark.slow,
]

TOKEN = "s3cret-token"


def ts_bytes(path: Path) -> bytes:
    """The file's video and audio remuxed into MPEG-TS (what a camera's TS feed carries)."""
    out = io.BytesIO()
    with av.open(str(path)) as source, av.open(out, "w", format="mpegts") as sink:
        streams = [s for s in source.streams if s.type in ("video", "audio")]
        mapped = {s.index: sink.add_stream_from_template(s) for s in streams}
        for packet in source.demux(streams):
            if packet.dts is None:
                continue
            packet.stream = mapped[packet.stream.index]
            sink.mux(packet)
    return out.getvalue()


def test_a_live_stream_reaches_home_assistant_through_mqtt(
    tmp_path: Path, default_models, mosquitto
):
    sample = write_sample(tmp_path / "sample.mkv")
    source = TcpTsServer(ts_bytes(sample.path), sample.duration)
    source.start()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    config = Config.model_validate(
        {
            "models": default_models.model_dump(),
            "redis": {"url": redis.url, "embedded": False},
            "api": {"api_token": TOKEN, "allow_internal": ["127.0.0.0/8"]},
            "sinks": {"ha": {"kind": "mqtt", "port": mosquitto.port, "keepalive_s": 5}},
        }
    )
    recorder = Recorder(mosquitto.port, ("mmlm/#", "homeassistant/#")).start()
    port = free_port()
    try:
        driver.start_ray(None)
        driver.run_service(
            config, None, redis.url, host="127.0.0.1", port=port, jobs_dir=tmp_path / "jobs"
        )
        http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert http.post("/streams", json={"id": "cam1", "url": source.url}).status_code == 201
        recorder.wait_for(lambda: b"ON" in recorder.on("mmlm/cam1/person"), timeout=180)
        recorder.wait_for(lambda: recorder.on("mmlm/cam1/description"), timeout=30)
        events = [json.loads(p) for p in recorder.on("mmlm/cam1/event")]
        assert {"stream", "label"} <= {e["type"] for e in events}
        assert any(e["type"] == "label" and e["key"] == "person" for e in events)
        kept = retained(mosquitto.port, "#")
        assert json.loads(kept["mmlm/cam1/state"])["state"] == "streaming"
        assert kept["mmlm/available"] == b"online"
        assert kept["mmlm/cam1/description"]
        configs = {t: json.loads(p) for t, p in kept.items() if t.startswith("homeassistant/")}
        assert all(check_discovery(t, p) for t, p in configs.items())
        sensors = {p["state_topic"] for t, p in configs.items() if "/binary_sensor/" in t}
        assert {"mmlm/cam1/person", "mmlm/cam1/alarm"} <= sensors
        delivered = re.search(r'^mmlm_sink_delivered_total\{sink="ha"\} (\S+)$',
                              http.get("/metrics").text, re.M)  # fmt: skip
        assert delivered and float(delivered.group(1)) >= len(events)
        assert http.delete("/streams/cam1").status_code == 204
    finally:
        recorder.stop()
        driver.shutdown()
        source.stop()
        redis.stop()
    # The sink went with the service: its goodbye, or its last will, says so.
    deadline = time.monotonic() + 30
    while retained(mosquitto.port, "mmlm/available", 0.2).get("mmlm/available") != b"offline":
        assert time.monotonic() < deadline, "the sink's availability never turned offline"
