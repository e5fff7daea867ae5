"""Retention by time on a timer (idle sources too) and what one source-hour costs in Redis.

``measure_source_hour`` publishes one hour of a realistic always-on camera and reads what each
kind of key costs; the capacity model of docs/operations.md (section Redis) quotes its
figures, and ``test_one_source_hour_costs_what_the_operations_guide_says`` keeps them honest.
Run it with ``-s`` to print the figures again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import redis
from redis_fixtures import FAST, KEYS, RedisServer, redis_server  # noqa: F401

from mmlm_stream.bus.redis_bus import RedisPublisher
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.records.schema import (
    EventRecord,
    LabelScore,
    ObjectScore,
    Speech,
    SpeechText,
    WindowRecord,
    event_id,
    utc_stamp,
    window_id,
)

pytestmark = pytest.mark.redis

HOUR_MS = 3_600_000


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis_server.client()
    yield conn
    conn.close()


def add_old(client: redis.Redis, key: str, count: int, age_ms: int) -> None:
    """``count`` entries with ids ``age_ms`` in the past, as if written then."""
    base = int(time.time() * 1000) - age_ms
    for i in range(count):
        client.xadd(key, {"json": "{}"}, id=f"{base + i}-0")


def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_sweep_trims_old_entries_of_idle_sources_and_keeps_recent_ones(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    streams = [
        KEYS.windows("idle-cam"),
        KEYS.events("idle-cam"),
        KEYS.events(),
        KEYS.dead("alerts"),
    ]
    for key in streams:
        add_old(client, key, 150, 2 * HOUR_MS)  # more than one stream node (100 entries)
        client.xadd(key, {"json": "{}"})  # one recent entry each
    add_old(client, "other:stream", 5, 2 * HOUR_MS)  # not the bus's: left alone
    config = RedisConfig(retention_s=3600, retention_sweep_s=0.1, **FAST)
    with RedisPublisher(redis_server.url, config) as publisher:  # publishes nothing
        wait_for(lambda: publisher.trimmed == 4 * 150)
    assert [client.xlen(key) for key in streams] == [1, 1, 1, 1]
    assert client.xlen("other:stream") == 5


def test_the_sweep_survives_an_outage_and_trims_once_redis_is_back(
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_server.stop()
    config = RedisConfig(retention_s=3600, retention_sweep_s=0.1, **FAST)
    with caplog.at_level(logging.WARNING, logger="mmlm_stream.bus.redis_bus"):
        publisher = RedisPublisher(redis_server.url, config)
        time.sleep(0.5)  # several failed sweeps
        redis_server.start()
        client = redis_server.client()
        add_old(client, KEYS.windows("cam1"), 10, 2 * HOUR_MS)
        wait_for(lambda: publisher.trimmed == 10)
        assert publisher._sweeper is not None and publisher._sweeper.is_alive()
        publisher.close()
    assert client.xlen(KEYS.windows("cam1")) == 0
    # Unreachable Redis is the sender's to report (it had nothing to send: no line at all).
    assert not [r for r in caplog.records if "sweep" in r.getMessage()]
    client.close()


def test_one_publisher_sweeps_per_period(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    add_old(client, KEYS.windows("cam1"), 10, 2 * HOUR_MS)
    config = RedisConfig(retention_s=3600, retention_sweep_s=30, **FAST)
    publishers = [RedisPublisher(redis_server.url, config) for _ in range(3)]
    wait_for(lambda: sum(p.trimmed for p in publishers) == 10)
    time.sleep(0.2)
    for publisher in publishers:
        publisher.close()
    assert client.pttl(KEYS.sweep_lock) <= 27_000
    assert sorted(p.trimmed for p in publishers) == [0, 0, 10]


def test_no_sweep_without_retention(redis_server: RedisServer, client: redis.Redis) -> None:
    add_old(client, KEYS.windows("cam1"), 10, 2 * HOUR_MS)
    with RedisPublisher(redis_server.url, RedisConfig(retention_s=None, **FAST)) as publisher:
        assert publisher._sweeper is None and publisher.sweep() == 0
    assert client.xlen(KEYS.windows("cam1")) == 10


# -- what one source-hour costs ----------------------------------------------------------------

VISUAL = [
    "lobby", "revolving door", "person", "turnstile", "shopping cart", "backpack", "umbrella",
    "suitcase", "potted plant", "desk", "monitor", "sliding door", "street sign", "minibus",
]  # fmt: skip
AUDIO = [
    "Speech", "Inside, large room or hall", "Footsteps", "Door", "Music", "Silence",
    "Walk, footsteps", "Vehicle", "Beep, bleep", "Chatter", "Telephone bell ringing",
]  # fmt: skip
OBJECTS = ["person", "backpack", "handbag", "chair", "suitcase", "umbrella", "bicycle"]
PHRASES = [
    "Good morning, I have an appointment with Ms. Larsen on the fourth floor.",
    "Could you sign in here and take a visitor badge, please.",
    "The lifts on the left are out of service until noon.",
    "Delivery for the third floor, where should I leave it?",
]
MODELS = {
    "visual": "efficientnet-lite0-imagenet1k",
    "audio": "yamnet-w8a8+silero-vad",
    "speech": "Systran/faster-whisper-base",
    "text": "sentence-transformers/all-MiniLM-L6-v2",
    "objects": "ssd-mobilenet-v2-coco",
}


def _labels(rng: random.Random, names: list[str], k: int) -> list[LabelScore]:
    return [
        LabelScore(label=n, score=round(rng.uniform(0.1, 0.99), 4)) for n in rng.sample(names, k)
    ]


def _objects(rng: random.Random, names: list[str], k: int) -> list[ObjectScore]:
    boxes = []
    for label in _labels(rng, names, k):
        x0, y0 = round(rng.uniform(0, 0.5), 4), round(rng.uniform(0, 0.5), 4)
        box = [x0, y0, round(x0 + rng.uniform(0.1, 0.5), 4), round(y0 + rng.uniform(0.1, 0.5), 4)]
        boxes.append(ObjectScore(label=label.label, score=label.score, box=box))
    return boxes


def source_hour(
    source: str = "rtsp-lobby-cam-01", start: datetime | None = None, seed: int = 7
) -> tuple[list[WindowRecord], list[EventRecord]]:
    """One hour of an always-on live camera as the pipeline publishes it: windows of 4 s every
    2 s (1800), five visual and audio labels, objects, speech in a third of the windows, a
    sentence of description; 60 events, half of them lasting (an opening version, then its
    closing update) and half point events."""
    rng = random.Random(seed)
    wall0 = start or datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    windows: list[WindowRecord] = []
    for i in range(1800):
        t = i * 2.0
        said = rng.choice(PHRASES) if i % 3 == 0 else ""
        seen = _labels(rng, VISUAL, 5)
        speech = Speech(
            text=said, segments=[SpeechText(start=t + 0.4, end=t + 3.1, text=said)] if said else []
        )
        windows.append(
            WindowRecord(
                source=source,
                window_id=window_id(source, t),
                start=t,
                end=t + 4.0,
                wall_start=utc_stamp(wall0 + timedelta(seconds=t)),
                visual=seen,
                audio=_labels(rng, AUDIO, 5),
                speech=speech,
                objects=_objects(rng, OBJECTS, 2),
                description=(
                    f"A {seen[0].label} and a {seen[1].label} are in view"
                    + (f'. Someone says: "{said[:60]}".' if said else ", and it is quiet.")
                ),
                channels=["audio", "objects", "visual", *(["speech"] if said else [])],
                models=MODELS,
            )
        )
    events: list[EventRecord] = []
    for j in range(60):
        t = j * 60.0 + 7.0
        lasting = j % 2 == 0
        type_, key = ("sound", "footsteps") if lasting else ("scene_change", "cut")
        record = EventRecord(
            id=event_id(source, type_, key, t),
            source=source,
            type=type_,
            key=key,
            start=t,
            end=t + (12.0 if lasting else 0.0),
            confidence=0.83,
            description="Footsteps (Walk, footsteps 0.83)." if lasting else "The scene changes.",
            window_id=window_id(source, t - t % 2),
            ongoing=lasting,
            evidence={"audio": {"labels": [{"label": "Walk, footsteps", "score": 0.83}]}}
            if lasting
            else {"frames": {"distance": 0.41}},
            wall_start=utc_stamp(wall0 + timedelta(seconds=t)),
        )
        events.append(record)
        if lasting:
            events.append(record.model_copy(update={"ongoing": False, "end": t + 19.5}))
    return windows, events


@dataclass
class SourceHour:
    """Bytes one source-hour leaves in Redis, by kind of key (MEMORY USAGE), and in all."""

    windows_stream: int
    events_stream: int
    all_events_stream: int
    dedupe_keys: int
    event_hashes: int
    used_memory: int  # INFO used_memory after minus before
    windows: int
    events: int
    versions_stream: int = 0  # every event version, for sinks

    @property
    def streams(self) -> int:
        return (
            self.windows_stream + self.events_stream + self.all_events_stream + self.versions_stream
        )


def _usage(client: redis.Redis, pattern: str) -> int:
    return sum(int(client.memory_usage(k, samples=0) or 0) for k in client.scan_iter(pattern, 1000))


def measure_source_hour(url: str, config: RedisConfig | None = None) -> SourceHour:
    """Publish one ``source_hour`` into an empty Redis at ``url`` and measure it."""
    client = redis.Redis.from_url(url)
    client.execute_command("MEMORY", "PURGE")
    before = int(client.info("memory")["used_memory"])
    windows, events = source_hour()
    with RedisPublisher(url, config or RedisConfig(**FAST)) as publisher:
        for record in [*windows, *events]:
            if isinstance(record, WindowRecord):
                publisher.publish_window(record)
            else:
                publisher.publish_event(record)
        assert publisher.flush(60)
    source = windows[0].source
    client.execute_command("MEMORY", "PURGE")
    result = SourceHour(
        windows_stream=_usage(client, KEYS.windows(source)),
        events_stream=_usage(client, KEYS.events(source)),
        all_events_stream=_usage(client, KEYS.events()),
        dedupe_keys=_usage(client, f"{KEYS.prefix}:seen:*"),
        event_hashes=_usage(client, f"{KEYS.prefix}:event:*"),
        used_memory=int(client.info("memory")["used_memory"]) - before,
        windows=client.xlen(KEYS.windows(source)),
        events=client.xlen(KEYS.events(source)),
        versions_stream=_usage(client, KEYS.versions),
    )
    client.close()
    return result


# What the capacity model in docs/operations.md quotes (Redis 7.0, jemalloc, 64-bit), in bytes:
DOCUMENTED_STREAMS_PER_SOURCE_HOUR = 2_750_000  # a window ~1.5 KB in its stream, an event ~0.5 KB
DOCUMENTED_DEDUPE_PER_SOURCE_HOUR = 247_000  # ~125 B per record version remembered (1980)
DOCUMENTED_HASHES_PER_SOURCE_HOUR = 42_000  # ~0.7 KB per event hash (60)
DOCUMENTED_USED_PER_SOURCE_HOUR = 3_300_000  # INFO used_memory: the keys plus ~8% (dicts, TTLs)


@pytest.mark.slow
def test_one_source_hour_costs_what_the_operations_guide_says(redis_server: RedisServer) -> None:
    hour = measure_source_hour(redis_server.url)
    print(f"\n{hour} streams={hour.streams}")
    assert (hour.windows, hour.events) == (1800, 60)
    for measured, quoted in [
        (hour.streams, DOCUMENTED_STREAMS_PER_SOURCE_HOUR),
        (hour.dedupe_keys, DOCUMENTED_DEDUPE_PER_SOURCE_HOUR),
        (hour.event_hashes, DOCUMENTED_HASHES_PER_SOURCE_HOUR),
        (hour.used_memory, DOCUMENTED_USED_PER_SOURCE_HOUR),
    ]:
        assert 0.75 * quoted <= measured <= 1.25 * quoted, (measured, quoted)
    # Everything the bus wrote is in those keys (allocator slack aside).
    accounted = hour.streams + hour.dedupe_keys + hour.event_hashes
    assert 0.8 * hour.used_memory <= accounted <= 1.25 * hour.used_memory
