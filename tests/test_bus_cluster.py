"""The bus on a real three-node Redis Cluster: slot-local keys, both scripts, consumer groups."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis_fixtures import (  # noqa: F401
    FAST,
    RedisClusterServers,
    event,
    redis_cluster,
    window,
)

from mmlm_stream.bus.client import Subscriber
from mmlm_stream.bus.redis_bus import BusKeys, RedisPublisher
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.records.schema import EventRecord

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SOURCES = ["cam1", "lobby.mkv", "odd{name}", "}x"]
WALL = "2026-11-28T10:00:00.000Z"
_prefixes = itertools.count()


@pytest.fixture
def config() -> RedisConfig:
    """A prefix of its own per test: the cluster is shared by the module."""
    return RedisConfig(cluster=True, prefix=f"t{next(_prefixes)}", **FAST)


@pytest.fixture
def client(redis_cluster: RedisClusterServers) -> Iterator[redis.RedisCluster]:
    conn = redis_cluster.client()
    yield conn
    conn.close()


def entries(client: redis.RedisCluster, key: str) -> list[dict]:
    return [json.loads(fields[b"json"]) for _, fields in client.xrange(key)]


def records(source: str) -> list:
    """Windows and events of one source: point, closed and live open/closing versions."""
    opening = event(10.0, source=source, ongoing=True, end=12.0).model_copy(
        update={"wall_start": WALL}
    )
    closing = opening.model_copy(update={"ongoing": False, "end": 17.2})
    return [
        *(window(t, source) for t in (0.0, 2.0, 4.0)),
        event(3.0, source=source),
        event(5.0, source=source, type_="speech", key="speech", end=5.0),
        opening,
        closing,
    ]


def publish_all(url: str, config: RedisConfig) -> RedisPublisher:
    with RedisPublisher(url, config) as publisher:
        for source in SOURCES:
            for record in records(source):
                if isinstance(record, EventRecord):
                    publisher.publish_event(record)
                else:
                    publisher.publish_window(record)
        assert publisher.flush(10)
    return publisher


def test_one_source_s_keys_share_a_slot_and_single_server_names_stay_as_they_were(
    client: redis.RedisCluster,
) -> None:
    keys = BusKeys("mmlm", cluster=True)
    for source in SOURCES:
        names = [
            keys.windows(source),
            keys.events(source),
            keys.event(f"{source}:sound:1", source),
            keys.seen("window", f"{source}:0", source),
            keys.seen("event-close", f"{source}:sound:1", source),
        ]
        assert len({client.cluster_keyslot(name) for name in names}) == 1, names
    assert keys.windows("cam1") == "mmlm:windows:{cam1}"
    assert client.cluster_keyslot(keys.seen_all("x")) == client.cluster_keyslot(keys.events())
    assert keys.windows("a{b}") != keys.windows("b}")  # a digest tag keeps odd names apart
    plain = BusKeys("mmlm")
    assert (plain.windows("cam1"), plain.events("cam1"), plain.events()) == (
        "mmlm:windows:cam1",
        "mmlm:events:cam1",
        "mmlm:events",
    )
    assert plain.seen("event", "e1", "cam1") == "mmlm:seen:event:e1"
    assert plain.event("e1", "cam1") == "mmlm:event:e1"


def test_windows_and_events_of_several_sources_are_published_once_on_a_cluster(
    redis_cluster: RedisClusterServers,
    client: redis.RedisCluster,
    config: RedisConfig,
) -> None:
    first = publish_all(redis_cluster.url, config)
    again = publish_all(redis_cluster.url, config)  # a re-run: nothing new
    # per source: 3 windows and 3 events enter the streams, the closing update is announced
    assert (first.published, first.announced, first.duplicates) == (6 * 4, 4, 0)
    assert (again.published, again.announced, again.duplicates, again.errors) == (0, 0, 28, 0)

    keys = BusKeys(config.prefix, cluster=True)
    every = [e["id"] for e in entries(client, keys.events())]
    assert len(every) == len(set(every)) == 3 * len(SOURCES)
    for source in SOURCES:
        assert [w["start"] for w in entries(client, keys.windows(source))] == [0.0, 2.0, 4.0]
        own = entries(client, keys.events(source))
        assert len(own) == 3 and {e["id"] for e in own} <= set(every)
        live = next(e for e in own if e.get("wall_start"))
        assert live["ongoing"] is True  # a live event enters the streams when it opens
        latest = json.loads(client.hget(keys.event(live["id"], source), "json"))
        assert latest["ongoing"] is False and latest["end"] == 17.2


def test_an_event_missing_from_the_all_events_stream_is_added_by_the_retry(
    redis_cluster: RedisClusterServers,
    client: redis.RedisCluster,
    config: RedisConfig,
) -> None:
    keys = BusKeys(config.prefix, cluster=True)
    record = event(3.0, source="cam1")
    with RedisPublisher(redis_cluster.url, config) as publisher:
        publisher.publish_event(record)
        assert publisher.flush(5)
        # As if the process died after the source's script and before the all-events one.
        client.delete(keys.events(), keys.seen_all(record.id))
        publisher.publish_event(record)
        assert publisher.flush(5)
        assert (publisher.published, publisher.duplicates) == (1, 1)
    assert [e["id"] for e in entries(client, keys.events())] == [record.id]
    assert len(entries(client, keys.events("cam1"))) == 1


def test_a_consumer_group_on_a_cluster_reads_every_event_and_leaves_nothing_pending(
    redis_cluster: RedisClusterServers,
    client: redis.RedisCluster,
    config: RedisConfig,
) -> None:
    publish_all(redis_cluster.url, config)
    expected = 3 * len(SOURCES)
    for source in (None, "odd{name}"):
        subscriber = Subscriber(
            redis_cluster.url, config.prefix, group="alerts", source=source, config=config
        )
        got: list[EventRecord] = []

        def run(sub: Subscriber = subscriber, into: list[EventRecord] = got) -> None:
            for record in sub.iter_events(block_ms=100, from_start=True):
                into.append(record)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        want = expected if source is None else 3
        deadline = time.monotonic() + 10
        while len(got) < want and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # anything beyond would be a duplicate
        subscriber.stop()
        thread.join(5)
        assert len(got) == want and len({e.id for e in got}) == want
        stream = subscriber.events_stream
        assert int(client.xpending(stream, "alerts")["pending"]) == 0
        subscriber.close()


def test_stream_registry_works_on_a_cluster(
    redis_cluster: RedisClusterServers,
    client: redis.RedisCluster,
    config: RedisConfig,
) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{config.prefix}:live:cam1")
    with RedisPublisher(redis_cluster.url, config) as publisher:
        publisher.register_stream("cam1", {"url": "rtsp://cam1/stream"})
        publisher.set_stream_state("cam1", {"state": "streaming"})
        assert publisher.flush(5)
        [(source, entry)] = publisher.streams().items()
        assert (source, entry["url"], entry["state"]["state"]) == (
            "cam1",
            "rtsp://cam1/stream",
            "streaming",
        )
        deadline, message = time.monotonic() + 5, None
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
        assert message is not None and json.loads(message["data"])["kind"] == "status"
        publisher.unregister_stream("cam1")
        assert publisher.streams() == {}
    pubsub.close()


def test_scripts_flushed_on_every_node_are_loaded_again(
    redis_cluster: RedisClusterServers,
    client: redis.RedisCluster,
    config: RedisConfig,
) -> None:
    with RedisPublisher(redis_cluster.url, config) as publisher:
        publisher.publish_event(event(1.0, source="cam1"))
        assert publisher.flush(5)
        client.script_flush()
        for source in SOURCES:
            publisher.publish_event(event(3.0, source=source))
        assert publisher.flush(5)
        assert (publisher.published, publisher.errors) == (1 + len(SOURCES), 0)
    assert client.xlen(BusKeys(config.prefix, cluster=True).events()) == 1 + len(SOURCES)


def test_the_retention_sweep_trims_idle_streams_on_every_node(
    redis_cluster: RedisClusterServers,
    client: redis.RedisCluster,
    config: RedisConfig,
) -> None:
    config = config.model_copy(update={"retention_s": 3600, "retention_sweep_s": 0.1})
    keys = BusKeys(config.prefix, cluster=True)
    names = [*(keys.windows(source) for source in SOURCES), keys.events()]
    assert (
        len(
            {client.nodes_manager.get_node_from_slot(client.cluster_keyslot(n)).name for n in names}
        )
        > 1
    )
    old_ms = int(time.time() * 1000) - 7_200_000
    for name in names:
        for i in range(3):
            client.xadd(name, {"json": "{}"}, id=f"{old_ms + i}-0")
    with RedisPublisher(redis_cluster.url, config) as publisher:  # idle: publishes nothing
        deadline = time.monotonic() + 5
        while publisher.trimmed < 3 * len(names) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert publisher.trimmed == 3 * len(names)
    assert [client.xlen(name) for name in names] == [0] * len(names)


def test_a_publisher_started_while_the_cluster_is_away_delivers_once_it_answers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cluster = RedisClusterServers(tmp_path_factory.mktemp("late-cluster"))
    config = RedisConfig(cluster=True, **FAST)
    publisher = RedisPublisher(cluster.url, config)  # nothing listens yet: no error here
    seq = publisher.publish_window(window(0.0, "cam1"))
    assert not publisher.wait_delivered(seq, 0.3) and publisher.outages == 1
    try:
        cluster.start()
        assert publisher.wait_delivered(seq, 15)
        publisher.close()
        assert cluster.client().xlen(BusKeys(cluster=True).windows("cam1")) == 1
    finally:
        cluster.stop()
