"""Sinks: events through Redis to a real Mosquitto and to a webhook receiver on loopback.

A real redis-server and Mosquitto are started on free loopback ports; a receiver (a paho
subscriber with a persistent session, or an HTTP server) timestamps every arrival. Per far
side, two phases, each with a fresh consumer group:

1. Throughput: ``--burst`` events are published at once (a backlog) and the time until the
   receiver has them all gives events/s.
2. Latency: ``--steady`` events at ``--rate`` per second; an event's delivery time is its
   arrival at the receiver minus its ``published_at`` (stamped by the bus when Redis took it).

Baseline, measured in the same run on the same servers: a bare bridge of the same
libraries (XREADGROUP, one publish or POST, wait for the PUBACK or the 2xx, XACK; no filter,
retries, discovery or retained state). ``lost`` counts published events that never arrived.

Last line: ``mqtt_events_per_s=X webhook_events_per_s=Y p95_delivery_ms=Z lost=N`` (p95 over
both far sides). Targets: p95 under 100 ms on loopback, 0 lost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402
import redis  # noqa: E402
from mqtt_fixtures import Mosquitto, Recorder  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from redis_fixtures import RedisServer  # noqa: E402

from mmlm_stream.bus.redis_bus import RedisPublisher  # noqa: E402
from mmlm_stream.config import Config  # noqa: E402
from mmlm_stream.config.bus import RedisConfig  # noqa: E402
from mmlm_stream.records.schema import EventRecord, event_id, window_id  # noqa: E402
from mmlm_stream.sinks import open_runner  # noqa: E402

REDIS = RedisConfig(retry_initial_s=0.02, retry_max_s=0.1)


def events(source: str, count: int, offset: int) -> list[EventRecord]:
    return [
        EventRecord(
            id=event_id(source, "sound", "alarm", float(offset + i)),
            source=source,
            type="sound",
            key="alarm",
            start=float(offset + i),
            end=float(offset + i) + 2.0,
            confidence=0.9,
            description="An alarm sounds.",
            window_id=window_id(source, float(offset + i)),
        )
        for i in range(count)
    ]


def _age_ms(published_at: str | None, arrived: float) -> float | None:
    if not published_at:
        return None
    sent = datetime.fromisoformat(published_at.replace("Z", "+00:00")).timestamp()
    return (arrived - sent) * 1000


class Arrivals:
    """What a receiver saw: event id -> (arrival time, the event's published_at)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, tuple[float, str | None]] = {}

    def add(self, body: bytes) -> None:
        record = json.loads(body)
        with self.lock:
            self.seen.setdefault(record["id"], (time.time(), record.get("published_at")))

    def wait(self, ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if ids <= self.seen.keys():
                    return True
            time.sleep(0.005)
        return False

    def latencies(self, ids: set[str]) -> list[float]:
        with self.lock:
            ages = [_age_ms(self.seen[i][1], self.seen[i][0]) for i in ids if i in self.seen]
        return [age for age in ages if age is not None]


def publish(url: str, records: list[EventRecord], rate: float | None = None) -> None:
    with RedisPublisher(url, REDIS) as publisher:
        began = time.monotonic()
        for index, record in enumerate(records):
            if rate:
                pause = began + index / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            publisher.publish_event(record)
        assert publisher.flush(30)


def bare_bridge(
    url: str, stop: threading.Event, deliver: Callable[[bytes], None], group: str
) -> None:
    """The baseline: read, hand over, wait for the confirmation, acknowledge."""
    client = redis.Redis.from_url(url)
    stream = "mmlm:versions"
    try:
        client.xgroup_create(stream, group, id="$", mkstream=True)
    except redis.ResponseError:
        pass
    while not stop.is_set():
        reply = client.xreadgroup(group, "bare", {stream: ">"}, count=16, block=200)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                deliver(fields[b"json"])
                client.xack(stream, group, entry_id)
    client.close()


def measure(
    name: str,
    url: str,
    arrivals: Arrivals,
    start_reader: Callable[[], Callable[[], None]],
    args: argparse.Namespace,
    offset: int,
) -> tuple[float, list[float], int]:
    """(events/s of a burst, delivery latencies of a steady run, lost) for one reader."""
    stop_reader = start_reader()
    try:
        burst = events("bench", args.burst, offset)
        began = time.monotonic()
        publish(url, burst)
        arrived = arrivals.wait({e.id for e in burst}, args.timeout)
        rate = args.burst / (time.monotonic() - began)
        steady = events("bench", args.steady, offset + args.burst)
        publish(url, steady, rate=args.rate)
        arrivals.wait({e.id for e in steady}, args.timeout)
        ids = {e.id for e in burst + steady}
        with arrivals.lock:
            lost = len(ids - arrivals.seen.keys())
        latencies = arrivals.latencies({e.id for e in steady})
    finally:
        stop_reader()
    if not arrived:
        print(f"  {name}: the burst did not arrive within {args.timeout:.0f}s")
    return rate, latencies, lost


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=2000, help="events of the throughput phase")
    parser.add_argument("--steady", type=int, default=500, help="events of the latency phase")
    parser.add_argument("--rate", type=float, default=100.0, help="events/s of the latency phase")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="mmlm-sinks-"))
    redis_server = RedisServer(folder / "redis")
    broker = Mosquitto(folder / "mosquitto")
    redis_server.start()
    broker.start()
    url = redis_server.url
    results: dict[str, tuple[float, list[float], int]] = {}
    offset = 0

    # -- MQTT --------------------------------------------------------------------------------
    mqtt_seen = Arrivals()
    listener = Recorder(broker.port, ("mmlm/+/event", "bare/event"), client_id="bench")
    listener.client.on_message = lambda _c, _u, m: mqtt_seen.add(m.payload)
    listener.start()

    def ours_mqtt() -> Callable[[], None]:
        config = Config.model_validate(
            {
                "redis": REDIS.model_dump(),
                "sinks": {"ha": {"kind": "mqtt", "port": broker.port, "discovery": False,
                                 "windows": False}},
            }
        )  # fmt: skip
        runner = open_runner("ha", config, url).start()
        _group_ready(url, "sink:ha")
        return lambda: runner.stop()

    def bare_mqtt() -> Callable[[], None]:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-bridge")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()

        def deliver(body: bytes) -> None:
            client.publish("bare/event", body, qos=1).wait_for_publish(10)

        return _thread(url, deliver, "bare-mqtt", client)

    for name, reader in (("mqtt bare", bare_mqtt), ("mqtt ours", ours_mqtt)):
        results[name] = measure(name, url, mqtt_seen, reader, args, offset)
        offset += args.burst + args.steady
    listener.stop()

    # -- webhooks ----------------------------------------------------------------------------
    hook_seen = Arrivals()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            hook_seen.add(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = receiver.server_address[1]

    def ours_hook() -> Callable[[], None]:
        config = Config.model_validate(
            {
                "redis": REDIS.model_dump(),
                "api": {"allow_internal": ["127.0.0.1/32"]},
                "sinks": {"hook": {"kind": "webhook", "url": f"http://127.0.0.1:{port}/in",
                                   "secret": "bench-secret"}},
            }
        )  # fmt: skip
        runner = open_runner("hook", config, url).start()
        _group_ready(url, "sink:hook")
        return lambda: runner.stop()

    def bare_hook() -> Callable[[], None]:
        def deliver(body: bytes) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/in", body=body, headers={"Content-Type": "application/json"})
            conn.getresponse().read()
            conn.close()

        return _thread(url, deliver, "bare-hook", None)

    for name, reader in (("webhook bare", bare_hook), ("webhook ours", ours_hook)):
        results[name] = measure(name, url, hook_seen, reader, args, offset)
        offset += args.burst + args.steady
    receiver.shutdown()
    broker.stop()
    redis_server.stop()

    print(f"{'far side':13} {'events/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'lost':>5}")
    for name, (rate, latencies, lost) in results.items():
        p50 = statistics.median(latencies) if latencies else float("nan")
        print(f"{name:13} {rate:9.0f} {p50:7.1f} {p95(latencies):7.1f} {lost:5d}")
    for side in ("mqtt", "webhook"):
        ours, bare = results[f"{side} ours"][0], results[f"{side} bare"][0]
        print(f"{side}: ours/bare throughput {ours / bare:.2f}")
    ours_latencies = results["mqtt ours"][1] + results["webhook ours"][1]
    lost = results["mqtt ours"][2] + results["webhook ours"][2]
    print(
        f"mqtt_events_per_s={results['mqtt ours'][0]:.0f} "
        f"webhook_events_per_s={results['webhook ours'][0]:.0f} "
        f"p95_delivery_ms={p95(ours_latencies):.1f} lost={lost}"
    )


def _group_ready(url: str, group: str) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if any(g["name"].decode() == group for g in client.xinfo_groups("mmlm:versions")):
                break
        except redis.ResponseError:
            pass
        time.sleep(0.01)
    client.close()


def _thread(
    url: str, deliver: Callable[[bytes], None], group: str, client: mqtt.Client | None
) -> Callable[[], None]:
    stop = threading.Event()
    thread = threading.Thread(target=bare_bridge, args=(url, stop, deliver, group), daemon=True)
    thread.start()
    time.sleep(0.3)  # the group exists

    def halt() -> None:
        stop.set()
        thread.join(5)
        if client is not None:
            client.disconnect()
            client.loop_stop()

    return halt


if __name__ == "__main__":
    main()
