"""A live source from a real server: RTSP from Debian's gst-rtsp-server.

The server (tests/rtsp_server.py) runs under the system Python because python3-gi is built
for it; these tests skip when ``gir1.2-gst-rtsp-server-1.0`` and ``python3-gi`` are missing.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis_fixtures import RedisServer, free_port

from mmlm_stream.cli.main import main
from mmlm_stream.config.api import ApiConfig
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.operators.decode import decode
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.records.channels import AudioChunk, ChannelItem, Frame, StreamState, StreamStatus
from mmlm_stream.security.url_policy import REFUSED, api_policy

pytestmark = pytest.mark.live

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
GI_CHECK = (
    "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
)


@dataclass
class RtspServer:
    process: subprocess.Popen[str]
    url: str

    @property
    def running(self) -> bool:
        return self.process.poll() is None


def _gst_rtsp_server_missing() -> str | None:
    """Why the server cannot run here, or None when it can."""
    try:
        check = subprocess.run(
            [SYSTEM_PYTHON, "-c", GI_CHECK], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        return f"{SYSTEM_PYTHON} not found"
    if check.returncode != 0:
        return (
            "gst-rtsp-server for the system Python is not installed "
            "(apt-get install gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-ugly): " + (check.stderr.strip().splitlines() or ["?"])[-1]
        )
    return None


@pytest.fixture
def rtsp_server(tmp_path: Path) -> Iterator[RtspServer]:
    """A live H.264 + A-law camera at rtsp://127.0.0.1:PORT/test, stopped after the test."""
    if reason := _gst_rtsp_server_missing():
        pytest.skip(reason)
    port = free_port()
    log = tmp_path / "rtsp_server.log"  # a file, not a pipe nobody reads that could fill up
    with log.open("w") as errors:
        process = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), str(port)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":  # "" when it exits first
        process.kill()
        process.communicate(timeout=10)
        raise RuntimeError(f"rtsp_server.py did not start: {log.read_text()[-500:]}")
    yield RtspServer(process, f"rtsp://127.0.0.1:{port}/test")
    process.terminate()
    try:
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


@pytest.mark.timeout(90)
def test_rtsp_camera_decodes_frames_and_contiguous_audio_in_media_order(rtsp_server):
    stop = threading.Event()
    config = DecodeConfig(frame_fps=2.0, open_timeout_s=10, stall_timeout_s=5)
    items: list[ChannelItem] = []
    for item in decode(rtsp_server.url, config, source_id="cam1", stop=stop):
        items.append(item)
        if isinstance(item, AudioChunk) and item.end >= 6.0:
            assert rtsp_server.running
            stop.set()
    states = [i.state for i in items if isinstance(i, StreamStatus)]
    assert states == [StreamState.CONNECTING, StreamState.STREAMING, StreamState.ENDED]
    frames = [i for i in items if isinstance(i, Frame)]
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    assert frames[0].image.shape == (240, 320, 3)
    assert all(0.3 < b.time - a.time < 0.8 for a, b in itertools.pairwise(frames))  # 2 fps
    assert chunks[0].start == 0.0
    assert all(b.start == pytest.approx(a.end, abs=1e-6) for a, b in itertools.pairwise(chunks))
    times = [i.sort_time for i in items if isinstance(i, Frame | AudioChunk)]
    assert times == sorted(times)
    # media time starts with the stream: the server's tone is on at first, then off (A-law
    # at 0.9 decodes to ~0.89; silence to 0)
    peak = {round(c.start): float(np.abs(c.samples).max()) for c in chunks}
    assert peak[0] > 0.8 and peak[4] < 0.01 and peak[5] < 0.01


def test_an_api_callers_rtsp_camera_opens_under_the_url_policy(rtsp_server):
    """Pinned to the checked address with RTSP's protocols only; loopback needs allow_internal."""
    config = DecodeConfig(frame_fps=2.0, open_timeout_s=10, stall_timeout_s=5, live=True)
    allowed = api_policy(ApiConfig(allow_internal=["127.0.0.0/8"]))
    stop = threading.Event()
    frames = 0
    spec = replace(resolve_source(rtsp_server.url, "cam"), policy=allowed)
    for item in decode(spec, config, stop=stop):
        frames += isinstance(item, Frame)
        if frames >= 4:
            stop.set()
    assert frames >= 4
    refused = replace(resolve_source(rtsp_server.url, "cam"), policy=api_policy(ApiConfig()))
    states = [i for i in decode(refused, config) if isinstance(i, StreamStatus)]
    assert [s.state for s in states] == [StreamState.CONNECTING, StreamState.FAILED]
    assert states[-1].reason == REFUSED


@pytest.mark.ray
@pytest.mark.redis
@pytest.mark.models
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_watch_of_rtsp_camera_publishes_windows_and_events_while_it_streams(
    rtsp_server, tmp_path: Path, capsys, monkeypatch, model_cache
):
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    monkeypatch.setenv("REDIS_URL", redis.url)
    monkeypatch.setenv("MMLM_MODELS__SET", "tiny")
    monkeypatch.setenv("MMLM_MODELS__CACHE_DIR", str(model_cache))
    seen_while_live: dict[str, Any] = {}
    watch_ended = threading.Event()

    def observe() -> None:
        """Looks at Redis while the camera still streams, as a dashboard would."""
        client = redis.client()
        while not watch_ended.wait(0.5):
            windows = client.xrange("mmlm:windows:cam1")
            events = [json.loads(e[b"json"]) for _, e in client.xrange("mmlm:events:cam1")]
            sounds = [e for e in events if e["type"] == "sound"]
            latest = client.hget(f"mmlm:event:{sounds[0]['id']}", "json") if sounds else None
            closed = latest is not None and not json.loads(latest)["ongoing"]
            if len(windows) >= 4 and closed:
                seen_while_live.update(
                    windows=[json.loads(w[b"json"]) for _, w in windows],
                    events=events,
                    closing=json.loads(latest),
                    all_events=client.xlen("mmlm:events"),
                    watching=not watch_ended.is_set(),
                    server_running=rtsp_server.running,
                )
                return

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    try:
        code = main(["watch", rtsp_server.url, "--source", "cam1", "--json", "--duration", "25"])
    finally:
        watch_ended.set()
        watcher.join(5)
        redis.stop()
    assert code == 0
    assert seen_while_live, "no 4 windows and a closed sound event in Redis within the run"
    assert seen_while_live["watching"] and seen_while_live["server_running"]
    windows = seen_while_live["windows"]
    starts = [w["start"] for w in windows]
    assert starts == sorted(starts) and all(w["wall_start"] for w in windows)
    events = seen_while_live["events"]
    states = [e["key"] for e in events if e["type"] == "stream"]
    assert states[:2] == ["connecting", "streaming"]
    loud = [e for e in events if e["type"] == "sound"]  # the tone at the start of the stream
    # A live alert enters the stream when it opens; its closing update goes to the event hash.
    assert loud[0]["key"] == "loud" and loud[0]["start"] < 2.0 and loud[0]["ongoing"]
    closing = seen_while_live["closing"]
    assert closing["id"] == loud[0]["id"] and closing["end"] > closing["start"]
    assert seen_while_live["all_events"] >= len(events)  # the all-sources stream has them too
    printed = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert [r["start"] for r in printed if r["schema"] == "mmlm.window/1"][:4] == starts[:4]
