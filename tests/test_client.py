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

from mmlm_stream.bus.client import Subscriber, format_event, run_subscribe
from mmlm_stream.bus.redis_bus import RedisPublisher
from mmlm_stream.bus.redis_client import RedisUnavailable, client_for
from mmlm_stream.bus.redis_server import STATE_FILE, connect, ensure_embedded
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.records.schema import EventRecord
from mmlm_stream.util.errors import ConfigError

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
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis_server.client()
    yield conn
    conn.close()


def test_two_consumers_of_one_group_get_every_event_exactly_once(
    redis_server: RedisServer,
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
    redis_server: RedisServer,
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
    redis_server: RedisServer,
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
    redis_server: RedisServer,
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
    redis_server: RedisServer,
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
    redis_server: RedisServer,
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
    redis_server: RedisServer,
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


def newer(record: EventRecord, **changes: object) -> str:
    """The event as a newer /1 producer might write it."""
    return json.dumps({**json.loads(record.to_json()), **changes})


def add_raw(client: redis.Redis, *fields: dict[str, str | bytes]) -> list[bytes]:
    """Entries written as another producer would, straight to the stream of all events."""
    return [client.xadd(KEYS.events(), entry) for entry in fields]  # type: ignore[arg-type]


def read_all(sub: Subscriber, n: int, client: redis.Redis, **kwargs: object) -> list[EventRecord]:
    """Read with ``sub`` until ``n`` events came and nothing of the group is pending."""
    got: list[EventRecord] = []
    thread = collect(sub, got, from_start=True, **kwargs)
    wait_for(lambda: len(got) >= n and pending(client, KEYS.events(), str(sub.group)) == 0)
    sub.stop()
    thread.join(2)
    return got


def dead_letters(client: redis.Redis, group: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in client.xrange(KEYS.dead(group))
    ]


def test_an_unknown_event_type_is_delivered_not_dropped(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    known = event(1.0)
    add_raw(
        client,
        {"json": known.to_json()},
        {"json": newer(event(2.0), type="gesture", key="wave", zone="door")},
    )
    got = read_all(Subscriber(redis_server.url, group="svc"), 2, client)
    assert [(e.type, e.known_type) for e in got] == [("sound", True), ("gesture", False)]
    assert json.loads(got[1].to_json())["zone"] == "door"
    assert dead_letters(client, "svc") == []

    sounds = Subscriber(redis_server.url, group="sounds", types=["sound"])
    assert [e.id for e in read_all(sounds, 1, client)] == [known.id]  # filtered out: acked
    assert pending(client, KEYS.events(), "sounds") == 0


def test_a_poison_entry_goes_to_dead_letters_before_it_is_acked(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    good = [event(1.0), event(9.0)]
    ids = add_raw(
        client,
        {"json": "{not json"},
        {"other": "x"},
        {"json": json.dumps({"schema": "mmlm.event/1", "type": "sound"})},
        {"json": good[0].to_json()},
        {"json": good[1].to_json()},
    )
    reader = Subscriber(redis_server.url, group="svc").iter_events(block_ms=100, from_start=True)
    assert next(reader).id == good[0].id
    letters = dead_letters(client, "svc")
    assert [letter["id"] for letter in letters] == [i.decode() for i in ids[:3]]
    unacked = client.xpending_range(KEYS.events(), "svc", "-", "+", 10)
    assert [entry["message_id"] for entry in unacked] == ids[3:]  # the events: not handled yet
    assert letters[0] == {
        "stream": KEYS.events(),
        "id": ids[0].decode(),
        "group": "svc",
        "reason": letters[0]["reason"],
        "json": "{not json",
    }
    assert letters[0]["reason"].startswith("not JSON")
    assert letters[1]["reason"] == "no json field" and "json" not in letters[1]
    assert letters[2]["reason"].startswith("missing id, source, key")
    assert next(reader).id == good[1].id
    reader.close()


def test_an_entry_stays_pending_when_the_dead_letter_write_fails(
    redis_server: RedisServer,
    client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client.set(KEYS.dead("svc"), "in the way")  # XADD answers WRONGTYPE
    [poison, _] = add_raw(client, {"json": "{not json"}, {"json": event(1.0).to_json()})
    sub = Subscriber(redis_server.url, group="svc", config=CLAIM)
    got: list[EventRecord] = []
    thread = collect(sub, got, from_start=True)
    wait_for(lambda: len(got) == 1)
    time.sleep(3 * CLAIM.claim_min_idle_s)  # taken over again and again, never lost
    [entry] = client.xpending_range(KEYS.events(), "svc", "-", "+", 10)
    assert entry["message_id"] == poison and entry["times_delivered"] > 1
    assert caplog.text.count("cannot write dead letters") == 1

    client.delete(KEYS.dead("svc"))
    wait_for(lambda: pending(client, KEYS.events(), "svc") == 0)
    sub.stop()
    thread.join(2)
    assert [letter["id"] for letter in dead_letters(client, "svc")] == [poison.decode()]
    assert len(got) == 1


def test_a_newer_major_schema_goes_to_dead_letters(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    raw = newer(event(1.0), schema="mmlm.event/2", type="gesture")
    add_raw(client, {"json": raw}, {"json": event(2.0).to_json()})
    got = read_all(Subscriber(redis_server.url, group="svc"), 1, client)
    assert [e.start for e in got] == [2.0]
    [letter] = dead_letters(client, "svc")
    assert letter["json"] == raw and "'mmlm.event/2'" in letter["reason"]


def test_a_group_reading_from_the_start_ends_with_nothing_pending(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    publish(redis_server.url, mixed_events(6))
    add_raw(
        client,
        {"json": newer(event(20.0), type="gesture")},
        {"json": "[]"},
        {"json": newer(event(22.0), schema="mmlm.event/2")},
    )
    sub = Subscriber(redis_server.url, group="svc", types=["sound", "speech"], config=CLAIM)
    got = read_all(sub, 4, client, batch=3)
    assert [e.type for e in got] == ["sound", "speech"] * 2
    assert len(dead_letters(client, "svc")) == 2
    [info] = client.xinfo_groups(KEYS.events())
    last = client.xinfo_stream(KEYS.events())["last-generated-id"]
    assert (info["pending"], info["last-delivered-id"]) == (0, last)


def test_without_a_group_unreadable_entries_are_logged_once_and_skipped(
    redis_server: RedisServer,
    client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [poison, *_] = add_raw(
        client, {"json": "{not json"}, {"json": newer(event(1.0), type="gesture", extra=1)}
    )
    reader = Subscriber(redis_server.url).iter_events(block_ms=100, from_start=True)
    read = next(reader)
    assert (read.type, json.loads(read.to_json())["extra"]) == ("gesture", 1)
    reader.close()
    assert caplog.text.count(f"unreadable entry {poison.decode()}") == 1
    assert not client.exists(KEYS.dead("svc"))


def test_run_subscribe_takes_a_comma_separated_type_list(
    redis_server: RedisServer,
    client: redis.Redis,
) -> None:
    publish(redis_server.url, mixed_events(3))
    params = SimpleNamespace(type=["sound,label"], group="cli", from_start=True, json=True, count=2)
    out = io.StringIO()
    assert run_subscribe(params, RedisConfig(**FAST), out, client=client, block_ms=100) == 0
    assert [json.loads(line)["type"] for line in out.getvalue().splitlines()] == ["sound", "label"]
    with pytest.raises(ConfigError, match="--type gesture"):
        run_subscribe(SimpleNamespace(type=["sound, gesture"]), RedisConfig(), out, client=client)


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
        assert endpoint.display_url == f"redis://***@127.0.0.1:{server.port}/0"
        publish(url, [window(0.0)])
        assert endpoint.client.xlen(KEYS.windows("clip.mkv")) == 1
        endpoint.client.close()
        wrong = url.replace("s3cret", "wrong")
        with pytest.raises(RedisUnavailable, match=r"redis://\*\*\*@.*: authentication failed"):
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
def test_cli_subscribe_prints_published_events(redis_server, capsys, monkeypatch):
    from mmlm_stream.cli.main import main

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


@pytest.mark.redis
def test_cli_subscribe_type_takes_a_list_and_prints_unknown_types_too(
    redis_server,
    capsys,
    monkeypatch,
):
    from mmlm_stream.cli.main import main

    client = redis_server.client()
    add_raw(client, {"json": newer(event(1.0), type="gesture")}, {"json": event(2.0).to_json()})
    client.close()
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert main(["subscribe", "--from-start", "--count", "2", "--json", "--group", "all"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["type"] for line in lines[-2:]] == ["gesture", "sound"]
    args = ["subscribe", "--from-start", "--count", "1", "--type", "speech,sound", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["type"] == "sound"
