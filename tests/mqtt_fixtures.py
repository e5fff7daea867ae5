"""A real Mosquitto broker per test, on a free loopback port in the test's tmp dir.

Debian's ``mosquitto`` (run.sh installs it). Persistence is on, so ``restart`` keeps retained
messages and the queued messages of persistent sessions, as a broker in production does.
``Recorder`` is a plain paho subscriber with a persistent session (QoS 1), the way Home
Assistant or Node-RED listen.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from redis_fixtures import free_port


def find_mosquitto() -> Path | None:
    system = Path("/usr/sbin/mosquitto")
    if system.is_file():
        return system
    found = shutil.which("mosquitto")
    return Path(found) if found else None


class Mosquitto:
    """``users``: name -> password (anonymous access off); ``tls``: a self-signed certificate
    for 127.0.0.1 is made and the listener speaks only TLS (``cert`` is the CA to trust)."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        users: dict[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            pytest.skip("mosquitto is not installed (run.sh installs it from Debian)")
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if users else 'true'}",
            "persistence true",
            f"persistence_location {directory}/",
            "autosave_interval 1",
            "log_dest stdout",
        ]
        if os.geteuid() == 0:  # else it drops to user mosquitto, who cannot read tmp_path
            lines.append("user root")
        if users:
            passwords = directory / "passwords"
            passwords.write_text("")
            for name, password in users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(passwords), name, password], check=True
                )
            lines.append(f"password_file {passwords}")
        self.cert = directory / "cert.pem"
        if tls:
            key = directory / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(key), "-out", str(self.cert)],
                check=True, capture_output=True,
            )  # fmt: skip
            lines += [f"certfile {self.cert}", f"keyfile {key}"]
        (directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.binary), "-c", str(self.directory / "mosquitto.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                time.sleep(0.05)
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "mosquitto did not start: "
                        + (self.directory / "mosquitto.log").read_text()[-500:]
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()  # saves the persistence file
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@dataclass
class Recorder:
    """Subscribes to ``topics`` with a persistent session and keeps every message."""

    port: int
    topics: tuple[str, ...] = ("#",)
    client_id: str = "recorder"
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def start(self) -> Recorder:
        self.client.connect_async("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        assert self.connected.wait(10), "the recorder did not connect"
        time.sleep(0.1)  # subscriptions acknowledged
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def wait_for(self, check: object, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():  # type: ignore[operator]
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out; topics seen: {sorted({t for t, *_ in self.messages})}")


def retained(port: int, topic_filter: str, settle_s: float = 0.5) -> dict[str, bytes]:
    """What a new subscriber gets as retained messages under ``topic_filter``."""
    seen: dict[str, bytes] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"peek-{time.monotonic_ns()}")
    client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)

    def keep(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        if message.retain:
            seen[message.topic] = bytes(message.payload)

    client.on_message = keep
    client.connect("127.0.0.1", port, keepalive=5)
    client.loop_start()
    time.sleep(settle_s)
    client.disconnect()
    client.loop_stop()
    return seen
