"""Sinks: events from Redis to a real Mosquitto (and Home Assistant discovery) and to a
webhook receiver on loopback, at-least-once through broker restarts and sink restarts."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from mqtt_fixtures import Mosquitto, Recorder, mosquitto, retained  # noqa: F401
from pydantic import ValidationError
from redis_fixtures import FAST, RedisServer, event, redis_server, window  # noqa: F401

from mmlm_stream.bus.redis_bus import RedisPublisher
from mmlm_stream.config import Config
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.sinks import MqttSinkConfig, SinkFilter
from mmlm_stream.records.schema import EventRecord, WindowRecord, event_id, window_id
from mmlm_stream.sinks import open_runner, open_sink
from mmlm_stream.sinks.base import DeliveryFailed, accepts
from mmlm_stream.sinks.home_assistant import Discovery, Topics
from mmlm_stream.sinks.runner import SinkRunner
from mmlm_stream.sinks.webhook import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify,
)
from mmlm_stream.util.errors import ConfigError

REDIS = RedisConfig(claim_min_idle_s=0.3, **FAST)


def publish(url: str, records: list[EventRecord | WindowRecord]) -> None:
    with RedisPublisher(url, REDIS) as publisher:
        for record in records:
            if isinstance(record, EventRecord):
                publisher.publish_event(record)
            else:
                publisher.publish_window(record)
        assert publisher.flush(5)


def condition(
    key: str, start: float, *, ongoing: bool, source: str = "cam1", type_: str = "label"
) -> EventRecord:
    return EventRecord(
        id=event_id(source, type_, key, start),
        source=source,
        type=type_,
        key=key,
        start=start,
        end=start + (4.0 if ongoing else 8.0),
        confidence=0.9,
        description=f"A {key} is in view.",
        window_id=window_id(source, start),
        ongoing=ongoing,
    )


def stream_state(state: str, start: float, source: str = "cam1") -> EventRecord:
    return EventRecord(
        id=event_id(source, "stream", state, start),
        source=source,
        type="stream",
        key=state,
        start=start,
        end=start,
        confidence=1.0,
        description=f"The stream is {state}.",
        window_id=window_id(source, start),
    )


def described(source: str, start: float, text: str) -> WindowRecord:
    return WindowRecord(
        source=source,
        window_id=window_id(source, start),
        start=start,
        end=start + 4.0,
        description=text,
    )


def config_with(sinks: dict[str, dict[str, Any]], **extra: Any) -> Config:
    return Config.model_validate({"redis": REDIS.model_dump(), "sinks": sinks, **extra})


def mqtt_sink(broker: Mosquitto, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "mqtt",
        "port": broker.port,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.3,
        **fields,
    }


@pytest.fixture
def runners() -> Iterator[list[SinkRunner]]:
    started: list[SinkRunner] = []
    yield started
    for runner in started:
        runner.stop(timeout_s=5)


def start(runners: list[SinkRunner], name: str, config: Config, url: str) -> SinkRunner:
    runner = open_runner(name, config, url).start()
    runners.append(runner)
    # The group is created at "$": wait until it exists before publishing.
    deadline = time.monotonic() + 10
    client = redis.Redis.from_url(url)
    while time.monotonic() < deadline:
        try:
            if client.xinfo_groups("mmlm:versions"):
                break
        except redis.ResponseError:
            pass
        time.sleep(0.02)
    client.close()
    return runner


# -- pure logic ------------------------------------------------------------------------------


def test_a_sink_filter_takes_sources_types_keys_and_scores_and_always_the_closing_version():
    rule = SinkFilter(sources=["cam1"], types=["label"], keys=["person"], min_confidence=0.95)
    opening = condition("person", 0.0, ongoing=True)
    assert not accepts(rule, opening)  # 0.9 < 0.95
    closing = condition("person", 0.0, ongoing=False)
    assert accepts(rule, closing)
    assert not accepts(rule, condition("person", 0.0, ongoing=False, source="cam2"))
    assert not accepts(rule, condition("dog", 0.0, ongoing=False))
    assert accepts(SinkFilter(), stream_state("streaming", 0.0))


# What Home Assistant's MQTT discovery documents for the components used: required keys, the
# keys a device entry needs, and the payloads. https://www.home-assistant.io/integrations/mqtt/
HA_REQUIRED = {
    "binary_sensor": {"state_topic"},
    "sensor": {"state_topic"},
    "event": {"state_topic", "event_types"},
    "camera": {"topic"},
}
HA_KNOWN = {
    "name", "unique_id", "availability", "payload_available", "payload_not_available",
    "device", "origin", "state_topic", "payload_on", "payload_off", "device_class",
    "value_template", "json_attributes_topic", "icon", "event_types", "topic",
}  # fmt: skip
HA_DEVICE_CLASSES = {"binary_sensor": {"occupancy", "motion", "sound", "smoke"}}
CONFIG_TOPIC = re.compile(
    r"^homeassistant/(binary_sensor|sensor|event|camera)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$"
)


def check_discovery(topic: str, payload: dict[str, Any]) -> str:
    match = CONFIG_TOPIC.match(topic)
    assert match, topic
    component = match.group(1)
    assert HA_REQUIRED[component] <= payload.keys(), (topic, payload)
    if component == "camera":
        assert "+" not in payload["topic"] and "#" not in payload["topic"]
    assert payload.keys() <= HA_KNOWN, payload.keys() - HA_KNOWN
    assert re.fullmatch(r"[A-Za-z0-9_-]+", payload["unique_id"])
    device = payload["device"]
    assert device["identifiers"] and isinstance(device["identifiers"], list)
    assert all(entry["topic"] and "#" not in entry["topic"] for entry in payload["availability"])
    for key in ("state_topic", "json_attributes_topic"):
        if key in payload:
            assert "+" not in payload[key] and "#" not in payload[key]
    if "device_class" in payload:
        assert payload["device_class"] in HA_DEVICE_CLASSES[component]
    if component == "binary_sensor":
        assert (payload["payload_on"], payload["payload_off"]) == ("ON", "OFF")
    return component


def test_discovery_configs_have_the_fields_home_assistant_documents():
    discovery = Discovery(Topics("mmlm"))
    messages = [
        *discovery.device("front door.mkv"),
        discovery.condition("front door.mkv", "person"),
    ]
    components = [check_discovery(topic, json.loads(payload)) for topic, payload in messages]
    assert sorted(components) == ["binary_sensor", "event", "sensor", "sensor"]
    person = json.loads(messages[-1][1])
    assert person["state_topic"] == "mmlm/front door.mkv/person"
    assert person["device_class"] == "occupancy"
    assert len({json.loads(p)["unique_id"] for _, p in messages}) == len(messages)


def test_a_condition_key_that_names_a_fixed_topic_does_not_overwrite_it():
    topics = Topics("mmlm")
    assert topics.key("cam1", "state") == "mmlm/cam1/key_state"
    assert topics.key("cam1", "a/b#") == "mmlm/cam1/a_b_"


def test_a_webhook_signature_verifies_and_a_replayed_or_changed_request_does_not():
    body = b'{"id": "cam1:sound:alarm:1000"}'
    stamp = str(int(time.time()))
    signature = sign("s3cret", stamp, body)
    assert verify("s3cret", stamp, body, signature)
    assert not verify("s3cret", stamp, body + b" ", signature)
    assert not verify("other", stamp, body, signature)
    assert not verify("s3cret", stamp, body, signature, now=float(stamp) + 301)
    assert not verify("s3cret", str(int(stamp) + 1), body, signature)


def stub(mapping: dict[str, list[str]]):
    def resolve(host: str, port: int | None) -> list[str]:
        return mapping[host]

    return resolve


def test_a_webhook_url_to_an_internal_address_is_refused_without_connecting():
    config = config_with({"hook": {"kind": "webhook", "url": "http://hooks.example.test/in"}})
    resolve = stub({"hooks.example.test": ["10.1.2.3"]})
    with pytest.raises(ConfigError, match=r"sinks\.hook\.url: .*internal address 10\.1\.2\.3"):
        open_sink("hook", config, resolve=resolve)


def test_a_webhook_whose_name_starts_resolving_inside_is_refused_at_delivery():
    answers = iter([["127.0.0.1"], ["192.168.7.7"]])
    config = config_with(
        {"hook": {"kind": "webhook", "url": "http://rebind.test:9/in"}},
        api={"allow_internal": ["127.0.0.1/32"]},
    )
    sink = open_sink("hook", config, resolve=lambda host, port: next(answers))
    with pytest.raises(DeliveryFailed, match=r"internal address 192\.168\.7\.7"):
        sink.deliver(stream_state("streaming", 0.0))


def test_a_webhook_host_that_does_not_resolve_yet_is_waited_for_not_refused():
    from mmlm_stream.sinks.base import FarSideDown

    config = config_with({"hook": {"kind": "webhook", "url": "http://hooks.later.test/in"}})
    sink = open_sink("hook", config, resolve=lambda host, port: [])  # DNS down at start
    with pytest.raises(FarSideDown, match="does not resolve"):
        sink.deliver(stream_state("streaming", 0.0))


def test_a_sink_that_is_not_configured_is_a_one_line_error_naming_the_known_ones():
    config = config_with({"ha": {"kind": "mqtt"}})
    with pytest.raises(ConfigError, match=r"sink 'nope' is not configured \(sinks: ha\)"):
        open_sink("nope", config)


def test_sink_secrets_are_masked_in_repr_and_real_in_the_json_dump(tmp_path: Path):
    config = config_with(
        {
            "ha": {"kind": "mqtt", "username": "u", "password": "hunter22"},
            "hook": {
                "kind": "webhook",
                "url": "https://hooks.example.test/x",
                "secret": "k3y",
                "headers": {"Authorization": "Bearer t0ken"},
            },
        }
    )
    shown = repr(config)
    assert "hunter22" not in shown and "k3y" not in shown and "t0ken" not in shown
    dumped = config.model_dump(mode="json")["sinks"]
    assert dumped["ha"]["password"] == "hunter22" and dumped["hook"]["secret"] == "k3y"
    with pytest.raises(ValidationError, match="empty"):
        config_with({"ha": {"kind": "mqtt", "username": "u", "password": " "}})
    assert isinstance(config.sinks["ha"], MqttSinkConfig)


# -- MQTT against a real broker ---------------------------------------------------------------


def test_events_become_mqtt_topics_with_retained_state_description_and_conditions(
    redis_server: RedisServer, mosquitto: Mosquitto, runners: list[SinkRunner]
):
    config = config_with({"ha": mqtt_sink(mosquitto)})
    recorder = Recorder(mosquitto.port, ("mmlm/#", "homeassistant/#")).start()
    start(runners, "ha", config, redis_server.url)
    publish(
        redis_server.url,
        [
            stream_state("streaming", 0.0),
            described("cam1", 0.0, "A person is at the door."),
            condition("person", 0.0, ongoing=True),
            condition("alarm", 2.0, ongoing=True, type_="sound"),
            condition("person", 0.0, ongoing=False),
        ],
    )
    recorder.wait_for(lambda: recorder.on("mmlm/cam1/person")[-1:] == [b"OFF"]
                      and len(recorder.on("mmlm/cam1/event")) == 4)  # fmt: skip
    assert [json.loads(p)["type"] for p in recorder.on("mmlm/cam1/event")] == [
        "stream", "label", "sound", "label"
    ]  # fmt: skip
    # person: OFF when first discovered, ON while seen, OFF when it closed.
    assert recorder.on("mmlm/cam1/person") == [b"OFF", b"ON", b"OFF"]
    recorder.wait_for(lambda: recorder.on("mmlm/cam1/description"))
    recorder.stop()
    kept = retained(mosquitto.port, "#")
    assert json.loads(kept["mmlm/cam1/state"])["state"] == "streaming"
    assert kept["mmlm/cam1/description"] == b"A person is at the door."
    assert kept["mmlm/cam1/alarm"] == b"ON" and kept["mmlm/cam1/person"] == b"OFF"
    assert kept["mmlm/available"] == b"online"
    assert "mmlm/cam1/event" not in kept  # events are not retained
    configs = {t: json.loads(p) for t, p in kept.items() if t.startswith("homeassistant/")}
    for topic, payload in configs.items():
        check_discovery(topic, payload)
    binary = {p["state_topic"] for t, p in configs.items() if "/binary_sensor/" in t}
    assert binary == {"mmlm/cam1/person", "mmlm/cam1/alarm"}


def test_an_events_snapshot_is_published_as_jpeg_bytes_for_the_camera_entity(
    tmp_path: Path, redis_server: RedisServer, mosquitto: Mosquitto, runners: list[SinkRunner]
):
    from mmlm_stream.config.snapshots import SnapshotsConfig
    from mmlm_stream.pipeline.snapshots import SnapshotStore

    store = SnapshotStore(SnapshotsConfig(dir=tmp_path / "snapshots"))
    person = condition("person", 0.0, ongoing=True)
    jpeg = b"\xff\xd8\xff\xe0 a JPEG \xff\xd9"
    store.write(person.id, jpeg)
    person.snapshot = person.id
    config = config_with(
        {"ha": mqtt_sink(mosquitto)}, snapshots={"dir": str(tmp_path / "snapshots")}
    )
    start(runners, "ha", config, redis_server.url)
    publish(redis_server.url, [person])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kept = retained(mosquitto.port, "#", 0.2)
        if "mmlm/cam1/snapshot" in kept:
            break
    assert kept["mmlm/cam1/snapshot"] == jpeg
    camera = json.loads(kept["homeassistant/camera/mmlm_cam1/snapshot/config"])
    assert check_discovery("homeassistant/camera/mmlm_cam1/snapshot/config", camera) == "camera"
    assert camera["topic"] == "mmlm/cam1/snapshot"


def test_the_last_will_marks_the_sink_offline_when_it_dies_and_online_when_back(
    redis_server: RedisServer, mosquitto: Mosquitto, runners: list[SinkRunner]
):
    config = config_with({"ha": mqtt_sink(mosquitto, keepalive_s=5)})
    runner = start(runners, "ha", config, redis_server.url)
    recorder = Recorder(mosquitto.port, ("mmlm/available",)).start()
    recorder.wait_for(lambda: recorder.on("mmlm/available")[-1:] == [b"online"])
    runner.sink.client._sock_close()  # type: ignore[attr-defined]  # the connection dies
    recorder.wait_for(lambda: b"offline" in recorder.on("mmlm/available"), timeout=20)
    recorder.wait_for(lambda: recorder.on("mmlm/available")[-1:] == [b"online"], timeout=20)
    recorder.stop()


def test_a_broker_restart_mid_stream_loses_no_event(
    redis_server: RedisServer, mosquitto: Mosquitto, runners: list[SinkRunner]
):
    config = config_with({"ha": mqtt_sink(mosquitto, discovery=False, windows=False)})
    recorder = Recorder(mosquitto.port, ("mmlm/+/event",), client_id="ha-listener").start()
    runner = start(runners, "ha", config, redis_server.url)
    sent = [event(float(i), source="cam1") for i in range(60)]
    publish(redis_server.url, sent[:20])
    recorder.wait_for(lambda: len(recorder.on("mmlm/cam1/event")) >= 20)
    mosquitto.stop()
    publish(redis_server.url, sent[20:40])  # while the broker is down: they wait in Redis
    time.sleep(1.0)
    assert runner.stats.down_since is not None
    mosquitto.start()
    publish(redis_server.url, sent[40:])
    want = {e.id for e in sent}
    recorder.wait_for(
        lambda: {json.loads(p)["id"] for p in recorder.on("mmlm/cam1/event")} >= want, timeout=30
    )
    got = [json.loads(p)["id"] for p in recorder.on("mmlm/cam1/event")]
    assert len(got) - len(set(got)) <= 2  # at-least-once: at most the ones in flight twice
    assert runner.stats.dead == 0
    recorder.stop()


def test_a_sink_that_is_stopped_resumes_where_it_was_and_loses_nothing(
    redis_server: RedisServer, mosquitto: Mosquitto, runners: list[SinkRunner]
):
    config = config_with({"ha": mqtt_sink(mosquitto, discovery=False, windows=False)})
    recorder = Recorder(mosquitto.port, ("mmlm/+/event",)).start()
    first = start(runners, "ha", config, redis_server.url)
    sent = [event(float(i), source="cam1") for i in range(30)]
    publish(redis_server.url, sent[:10])
    recorder.wait_for(lambda: len(recorder.on("mmlm/cam1/event")) >= 10)
    first.stop()
    runners.remove(first)
    publish(redis_server.url, sent[10:])  # no sink running
    start(runners, "ha", config, redis_server.url)
    want = {e.id for e in sent}
    recorder.wait_for(lambda: {json.loads(p)["id"] for p in recorder.on("mmlm/cam1/event")} >= want)
    recorder.stop()


def test_an_mqtt_sink_logs_in_over_tls_and_a_wrong_password_delivers_nothing(
    tmp_path: Path, redis_server: RedisServer, runners: list[SinkRunner]
):
    broker = Mosquitto(tmp_path / "tls", users={"mmlm": "right-pass"}, tls=True)
    broker.start()
    try:
        wrong = config_with(
            {"bad": mqtt_sink(broker, tls=True, ca_file=str(broker.cert), username="mmlm",
                              password="wrong-pass", discovery=False, windows=False)}
        )  # fmt: skip
        refused = start(runners, "bad", wrong, redis_server.url)
        publish(redis_server.url, [event(0.0, source="cam1")])
        deadline = time.monotonic() + 5
        while refused.stats.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refused.stats.delivered == 0 and refused.stats.dead == 0
        assert "refused" in (refused.stats.last_error or "")
        assert "wrong-pass" not in (refused.stats.last_error or "")
        refused.stop()
        runners.remove(refused)
        right = config_with(
            {"bad": mqtt_sink(broker, tls=True, ca_file=str(broker.cert), username="mmlm",
                              password="right-pass", discovery=False, windows=False)}
        )  # fmt: skip
        runner = start(runners, "bad", right, redis_server.url)  # same group: resumes
        deadline = time.monotonic() + 10
        while runner.stats.delivered < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.stats.delivered == 1
    finally:
        broker.stop()


# -- webhooks against a receiver on loopback --------------------------------------------------


class Receiver:
    """An HTTP receiver on 127.0.0.1 that answers from a script of statuses (then 200)."""

    def __init__(self, statuses: list[int], secret: str) -> None:
        self.statuses = statuses
        self.secret = secret
        self.requests: list[tuple[dict[str, str], bytes, bool]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items()}
                ok = verify(
                    receiver.secret,
                    headers[TIMESTAMP_HEADER],
                    body,
                    headers.get(SIGNATURE_HEADER, ""),
                )
                receiver.requests.append((headers, body, ok))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/mmlm"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_config(receiver: Receiver, **fields: Any) -> Config:
    return config_with(
        {"hook": {"kind": "webhook", "url": receiver.url, "secret": "s3cret",
                  "retry_initial_s": 0.05, "retry_max_s": 0.2, **fields}},
        api={"allow_internal": ["127.0.0.1/32"]},
    )  # fmt: skip


def test_a_webhook_receiver_sees_signed_events_and_a_retry_after_a_500(
    redis_server: RedisServer, runners: list[SinkRunner]
):
    receiver = Receiver([500], "s3cret")
    try:
        runner = start(runners, "hook", webhook_config(receiver), redis_server.url)
        sent = [event(0.0, source="cam1"), event(4.0, source="cam1")]
        publish(redis_server.url, sent)
        deadline = time.monotonic() + 10
        while runner.stats.delivered < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runner.stats.delivered == 2 and runner.stats.retries == 1
        ids = [headers[EVENT_ID_HEADER] for headers, _, _ in receiver.requests]
        assert ids == [sent[0].id, sent[0].id, sent[1].id]  # the 500 was retried, in order
        assert all(ok for _, _, ok in receiver.requests)
        assert json.loads(receiver.requests[-1][1])["id"] == sent[1].id
    finally:
        receiver.close()


def test_a_webhook_that_refuses_an_event_dead_letters_it_with_the_reason(
    redis_server: RedisServer, runners: list[SinkRunner]
):
    receiver = Receiver([400, 503, 503], "s3cret")
    try:
        runner = start(runners, "hook", webhook_config(receiver, max_attempts=2), redis_server.url)
        sent = [event(0.0, source="cam1"), event(4.0, source="cam1"), event(8.0, source="cam1")]
        publish(redis_server.url, sent)
        deadline = time.monotonic() + 10
        while runner.stats.delivered + runner.stats.dead < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (runner.stats.dead, runner.stats.delivered) == (2, 1)
        letters = redis.Redis.from_url(redis_server.url).xrange("mmlm:dead:sink:hook")
        reasons = [fields[b"reason"].decode() for _, fields in letters]
        assert "HTTP 400 (attempt 1 of 2)" in reasons[0]
        assert "HTTP 503 (attempt 2 of 2)" in reasons[1]
        assert json.loads(letters[0][1][b"json"])["id"] == sent[0].id
        assert "s3cret" not in " ".join(reasons)
    finally:
        receiver.close()


def test_a_webhook_receiver_that_is_down_holds_events_until_it_is_back(
    redis_server: RedisServer, runners: list[SinkRunner]
):
    receiver = Receiver([], "s3cret")
    url = receiver.url
    receiver.close()  # nothing listens on its port now
    config = config_with(
        {"hook": {"kind": "webhook", "url": url, "secret": "s3cret", "max_attempts": 1,
                  "retry_initial_s": 0.05, "retry_max_s": 0.2}},
        api={"allow_internal": ["127.0.0.1/32"]},
    )  # fmt: skip
    runner = start(runners, "hook", config, redis_server.url)
    publish(redis_server.url, [event(0.0, source="cam1")])
    time.sleep(1.0)
    assert runner.stats.down_since is not None and runner.stats.dead == 0
