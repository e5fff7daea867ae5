"""`watch` of a real live MPEG-TS server through the Serve application and Redis."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from media import TcpTsServer, mpegts_bytes
from redis_fixtures import RedisServer

from mmlm_stream.cli.main import main

pytestmark = [
    pytest.mark.live,
    pytest.mark.ray,
    pytest.mark.redis,
    pytest.mark.models,
    pytest.mark.slow,
]


def test_watch_survives_a_ten_second_outage_and_publishes_while_live(
    tmp_path: Path, capsys, monkeypatch, model_cache
):
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    server = TcpTsServer(mpegts_bytes(6.0), 6.0)
    server.start()
    monkeypatch.setenv("REDIS_URL", redis.url)
    monkeypatch.setenv("MMLM_MODELS__SET", "tiny")
    monkeypatch.setenv("MMLM_MODELS__CACHE_DIR", str(model_cache))
    monkeypatch.setenv("MMLM_DECODE__STALL_TIMEOUT_S", "2")
    monkeypatch.setenv("MMLM_DECODE__RECONNECT__MAX_S", "2")
    seen_while_live: list[int] = []

    def outage() -> None:
        client = redis.client()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and client.xlen("mmlm:windows:cam1") < 2:
            time.sleep(0.2)
        seen_while_live.append(client.xlen("mmlm:windows:cam1"))
        server.stop()
        time.sleep(10)
        server.start()

    chaos = threading.Thread(target=outage, daemon=True)
    chaos.start()
    try:
        code = main(["watch", server.url, "--source", "cam1", "--json", "--duration", "75"])
    finally:
        server.stop()
        chaos.join(5)
        redis.stop()
    assert code == 0
    assert seen_while_live and seen_while_live[0] >= 2  # published while the stream ran
    records = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    states = [r["key"] for r in records if r.get("type") == "stream"]
    assert states[:2] == ["connecting", "streaming"]
    assert "reconnecting" in states and states[states.index("reconnecting") + 1] == "streaming"
    starts = [r["start"] for r in records if r["schema"] == "mmlm.window/1"]
    assert starts == sorted(starts) and len(starts) >= 4
    walls = [r["wall_start"] for r in records if r["schema"] == "mmlm.window/1"]
    assert all(walls)
