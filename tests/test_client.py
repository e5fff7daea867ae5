"""Subscribers, ``run_subscribe`` and finding a server (embedded, URLs, auth) on real Redis."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from redis_fixtures import (  # noqa: F401
    FAST,
    KEYS,
    RedisServer,
    event,
    free_port,
    redis_server,
    window,
)

from mmlm_stream.bus import RedisPublisher
from mmlm_stream.bus_config import RedisConfig
from mmlm_stream.client import Subscriber, format_event, run_subscribe
from mmlm_stream.errors import ConfigError
from mmlm_stream.records import EventRecord
from mmlm_stream.redis_server import (
    STATE_FILE,
    RedisUnavailable,
    client_for,
    connect,
    ensure_embedded,
)

pytestmark = pytest.mark.redis

CLAIM = RedisConfig(claim_min_idle_s=0.2, **FAST)


def publish(url: str, records: list, config: RedisConfig | None = None) -> None:
    with RedisPublisher(url, config or RedisConfig(**FAST)) as publisher:
        for record in records:
            if isinstance(record, EventRecord):
                publisher.publish_event(record)
            else:
                publisher.publish_window(record)
        assert publisher.flush(5)


def mixed_events(n: int, source: str = "cam.mkv") -> list[EventRecord]:
    types = ["sound", "speech", "label"]
    return [event(i * 2.0, source=source, type_=types[i % 3], key=f"k{i}") for i in range(n)]


def pending(client: redis.Redis, stream: str, group: str) -> int:
    return int(client.xpending(stream, group)["pending"])


def collect(
    sub: Subscriber, into: list[EventRecord], work_s: float = 0.0, **kwargs: object
) -> threading.Thread:
    """Iterate in a thread, taking ``work_s`` per event as a real consumer would."""

    def run() -> None:
        for record in sub.iter_events(block_ms=100, **kwargs):  # type: ignore[arg-type]
            into.append(record)
            time.sleep(work_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:  # noqa: F811
    conn = redis_server.client()
    yield conn
    conn.close()


def test_two_consumers_of_one_group_get_every_event_exactly_once(
    redis_server: RedisServer,  # noqa: F811
    client: redis.Redis,
) -> None:
    events = mixed_events(40)
    publish(redis_server.url, events)
    got: list[list[EventRecord]] = [[], []]
    subs = [Subscriber(redis_server.url, group="svc", consumer=f"c{i}") for i in range(2)]
    threads = [collect(sub, got[i], 0.005, from_start=True, batch=5) for i, sub in enumerate(subs)]
    wait_for(lambda: len(got[0]) + len(got[1]) >= 40)
    time.sleep(0.2)  # nothing more comes
    for sub in subs:
        sub.stop()
    for thread in threads:
        thread.join(2)
    ids = [e.id for e in got[0] + got[1]]
    assert sorted(ids) == sorted(e.id for e in events)
    assert got[0] and got[1]  # both took part
    assert pending(client, KEYS.events(), "svc") == 0


def test_entries_a_consumer_read_but_never_acked_are_taken_over(
    redis_server: RedisServer,  # noqa: F811
    client: redis.Redis,
) -> None:
    events = mixed_events(6)
    publish(redis_server.url, events)
    dying = Subscriber(redis_server.url, group="svc", consumer="dying", config=CLAIM)
    reader = dying.iter_events(block_ms=100, from_start=True, batch=6)
    handled = [next(reader), next(reader), next(reader)]  # the first two are acked by now
    reader.close()  # it dies while handling the third: never acked, nor the other three read
    assert pending(client, KEYS.events(), "svc") == 4

    got: list[EventRecord] = []
    survivor = Subscriber(redis_server.url, group="svc", consumer="survivor", config=CLAIM)
    thread = collect(survivor, got)
    wait_for(lambda: len(got) >= 4)
    survivor.stop()
    thread.join(2)
    assert [e.id for e in got] == [e.id for e in events[2:]]
    assert handled[2].id == got[0].id
    assert pending(client, KEYS.events(), "svc") == 0


def test_a_restarted_consumer_gets_its_own_pending_entries_first(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    events = mixed_events(3)
    publish(redis_server.url, events)
    first = Subscriber(redis_server.url, group="svc", consumer="worker-1")
    reader = first.iter_events(block_ms=100, from_start=True)
    next(reader)
    reader.close()
    again = Subscriber(redis_server.url, group="svc", consumer="worker-1")  # long claim delay
    reader = again.iter_events(block_ms=100)
    assert [next(reader).id for _ in range(3)] == [e.id for e in events]
    reader.close()


def test_from_start_applies_to_a_new_group_only(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    old = mixed_events(2, source="a.mkv")
    publish(redis_server.url, old)
    late = Subscriber(redis_server.url, group="late", source="a.mkv")
    assert late.ensure_group(from_start=False) is True
    early = Subscriber(redis_server.url, group="early", source="a.mkv")
    assert early.ensure_group(from_start=True) is True
    assert early.ensure_group(from_start=True) is False  # exists: keeps its position
    new = event(100.0, source="a.mkv", key="new")
    publish(redis_server.url, [new])
    reader = early.iter_events(block_ms=100)
    assert [next(reader).id for _ in range(3)] == [e.id for e in [*old, new]]
    reader.close()
    reader = late.iter_events(block_ms=100)
    assert next(reader).id == new.id
    reader.close()


def test_type_and_source_filters_still_ack_what_they_skip(
    redis_server: RedisServer,  # noqa: F811
    client: redis.Redis,
) -> None:
    publish(redis_server.url, mixed_events(6, source="a.mkv") + mixed_events(3, source="b.mkv"))
    sub = Subscriber(redis_server.url, group="svc", source="a.mkv", types=["speech"])
    reader = sub.iter_events(block_ms=100, from_start=True)
    got = [next(reader), next(reader)]
    assert [(e.source, e.type) for e in got] == [("a.mkv", "speech")] * 2
    threading.Timer(0.3, sub.stop).start()
    assert list(reader) == []  # the label event after them is skipped, and acked
    assert pending(client, KEYS.events("a.mkv"), "svc") == 0


def test_without_a_group_events_windows_and_live_messages_are_tailed(
    redis_server: RedisServer,  # noqa: F811
    client: redis.Redis,
) -> None:
    publish(redis_server.url, [window(0.0), event(1.0)])
    sub = Subscriber(redis_server.url, source="clip.mkv")
    assert next(sub.iter_windows(block_ms=100, from_start=True)).window_id == "clip.mkv:0"
    tail = sub.iter_events(block_ms=100)  # from now: the event above is not replayed
    live = sub.tail_live(timeout_s=0.1)
    threading.Timer(0.3, publish, (redis_server.url, [event(9.0), window(2.0)])).start()
    assert next(tail).start == 9.0
    kinds = [next(live)["kind"], next(live)["kind"]]
    assert kinds == ["event", "window"]
    assert client.xinfo_groups(KEYS.events("clip.mkv")) == []
    sub.stop()


def test_run_subscribe_prints_lines_or_json_and_stops_after_count(
    redis_server: RedisServer,  # noqa: F811
    client: redis.Redis,
) -> None:
    events = [event(15.2, end=17.2), event(20.0, type_="speech", key="speech", end=20.0)]
    publish(redis_server.url, events)
    config = RedisConfig(**FAST)
    params = SimpleNamespace(
        source=None, type=None, group="cli", from_start=True, json=False, count=2
    )
    out = io.StringIO()
    assert run_subscribe(params, config, out, client=client, block_ms=100) == 0
    lines = out.getvalue().splitlines()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} clip\.mkv  sound  alarm  15\.2\u201317\.2s  "
        r"An alarm sounds \(Alarm 0\.88\)\.",
        lines[0],
    )
    assert re.fullmatch(r".* clip\.mkv  speech  speech  20\.0s  .*", lines[1])
    assert pending(client, KEYS.events(), "cli") == 0
    assert client.xinfo_consumers(KEYS.events(), "cli") == []  # it left the group

    out = io.StringIO()
    params.json, params.count, params.group, params.type = True, 1, None, ["speech"]
    assert run_subscribe(params, config, out, client=client, block_ms=100) == 0
    [line] = out.getvalue().splitlines()
    assert json.loads(line)["id"] == events[1].id
    with pytest.raises(ConfigError, match="--type nope"):
        run_subscribe(SimpleNamespace(type=["nope"]), config, out, client=client)


def test_format_event_marks_ongoing_events() -> None:
    record = event(1.0, ongoing=True).model_copy(update={"published_at": None})
    assert format_event(record).endswith("1.0\u20133.0s  An alarm sounds (Alarm 0.88). (ongoing)")


@pytest.fixture
def embedded_config(tmp_path: Path) -> Iterator[RedisConfig]:
    """A private embedded-server dir; whatever server it starts is ended afterwards."""
    config = RedisConfig(embedded_dir=tmp_path / "embedded")
    yield config
    try:
        pid = json.loads((config.embedded_dir / STATE_FILE).read_text())["pid"]
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def test_embedded_server_starts_when_nothing_answers_and_is_reused(
    embedded_config: RedisConfig,
) -> None:
    silent = f"redis://127.0.0.1:{free_port()}/0"
    notices: list[str] = []
    first = connect(embedded_config, environ={}, default_url=silent, on_notice=notices.append)
    assert first.embedded and first.server is not None and first.server.started
    assert first.client.ping()
    first.client.set("kept", "yes")
    assert "connection refused" in notices[0] and "started the embedded Redis 6.2" in notices[0]
    assert first.server.url.split("@")[1] not in silent and "***" in first.display_url

    again = connect(embedded_config, environ={}, default_url=silent, on_notice=notices.append)
    assert again.server is not None and not again.server.started
    assert again.server.pid == first.server.pid and "using the embedded" in notices[1]

    first.server.stop()  # a later run starts it again, from its append-only file
    revived = ensure_embedded(embedded_config)
    assert revived.started and revived.pid != first.server.pid
    assert client_for(revived.url, embedded_config).get("kept") == b"yes"
    assert oct((embedded_config.embedded_dir / STATE_FILE).stat().st_mode & 0o777) == "0o600"
    revived.stop()


def test_no_embedded_server_gives_one_line_naming_the_url(embedded_config: RedisConfig) -> None:
    silent = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as caught:
        connect(embedded_config, embedded=False, environ={}, default_url=silent)
    message = str(caught.value)
    assert message.startswith(f"{silent}: connection refused") and "\n" not in message
    config = embedded_config.model_copy(update={"url": silent})
    with pytest.raises(RedisUnavailable, match=r"connection refused$"):
        connect(config, environ={})  # a configured URL must answer: no fallback
    assert not (embedded_config.embedded_dir / STATE_FILE).exists()


def test_redis_url_with_user_and_password(tmp_path: Path) -> None:
    acl = ["--user", "alice", "on", ">s3cret", "~*", "&*", "+@all", "--user", "default", "off"]
    server = RedisServer(tmp_path / "acl", args=acl)
    server.start()
    try:
        url = f"redis://alice:s3cret@127.0.0.1:{server.port}/0"
        endpoint = connect(RedisConfig(), environ={"REDIS_URL": url})
        assert not endpoint.embedded and endpoint.client.acl_whoami() == "alice"
        assert endpoint.display_url == f"redis://alice:***@127.0.0.1:{server.port}/0"
        publish(url, [window(0.0)])
        assert endpoint.client.xlen(KEYS.windows("clip.mkv")) == 1
        endpoint.client.close()
        wrong = url.replace("s3cret", "wrong")
        with pytest.raises(RedisUnavailable, match=r"alice:\*\*\*@.*: authentication failed"):
            connect(RedisConfig(), environ={"REDIS_URL": wrong})
    finally:
        server.stop()


def test_rediss_url_configures_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    config = RedisConfig(url="rediss://u:p@redis.example:6380/2", ssl_ca_certs=ca)
    client = client_for(config.url or "", config)
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example", 6380, 2)
    assert (kwargs["username"], kwargs["password"]) == ("u", "p")
    assert kwargs["ssl_ca_certs"] == str(ca) and kwargs["ssl_cert_reqs"] == "required"
    plain = client_for("redis://127.0.0.1:1/0", config).connection_pool.connection_kwargs
    assert "ssl_ca_certs" not in plain


@pytest.mark.redis
def test_cli_subscribe_prints_published_events(redis_server, capsys, monkeypatch):  # noqa: F811
    from mmlm_stream.cli import main

    record = EventRecord(
        id="cam:speech:1",
        source="cam",
        type="speech",
        key="speech",
        start=1.0,
        end=1.0,
        confidence=0.9,
        description="Speech begins.",
        window_id="cam:0",
    )
    with RedisPublisher(redis_server.url, RedisConfig()) as publisher:
        publisher.publish_event(record)
        assert publisher.flush(5)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    code = main(["subscribe", "--from-start", "--count", "1", "--json", "--group", "cli"])
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line)["id"] == "cam:speech:1"
