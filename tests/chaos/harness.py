"""Chaos harness (issue 11): a real service with two live streams, real faults, invariants.

``ChaosService`` starts everything for real on this machine: a ``redis-server`` on a free
port (no persistence), two live MPEG-TS sources over TCP (``cam1``, ``cam2``; a few seconds of
clip, looping), a local Ray with ``serve`` and the tiny model set, small windows (2 s, hop
2 s), an API token; it POSTs both streams and runs an audit consumer group that reads
``{p}:events`` from the start and acknowledges each event.

Fault injectors do the real thing to real processes: SIGKILL/SIGSTOP of a Serve replica or
of an aggregator actor (pids from the Ray actor table), ``redis-server`` stopped and started
again on the same port, ``CLIENT PAUSE``, the TCP source closed or cut off every second, raw
XADDs of what a newer producer (or a broken one) writes. ``standard_faults`` is the issue's
list: SIGKILL of the Decoder replica, of each encoder replica, of an aggregator actor, of the
Publisher holding a backlog (Redis writes paused first); Redis stopped 60 s; Redis paused
(``CLIENT PAUSE``); a source gone 60 s with fast reconnects (over 1,100 attempts); a hung
encoder (SIGSTOP 20 s, call timeout 8 s); a flapping source; a subscriber one schema version
behind (a new event type). The chaos config is fast (``ChaosService.build_config``) so the
list takes about 5 minutes after a start of about 1.

``check_invariants(service, since_ms)`` returns the list of broken invariants (empty = all
good), each line starting with the invariant's name:

- ``windows-continuous``: consecutive windows of a stream (by ``wall_start``) are at most
  ``hop * 1.5`` apart, unless a ``reconnecting`` stream event followed by a ``streaming``
  stream event lies inside the gap; ``windows-tail``: the newest window is recent.
- ``state-consistent``: ``GET /streams/{id}`` state == ``{p}:streams`` state == key of the
  stream's last ``stream`` event.
- ``events-closed``: an event that was opened (an ``ongoing`` version) has a closing version
  (``{p}:event:{id}`` ``ongoing`` false), unless it can still be closed: it is the newest of
  its (type, key), opened in the current session of a stream that is running, by an
  aggregator that is still alive.
- ``windows-unique``: no two entries of ``{p}:windows:{source}`` with the same
  (``window_id``, ``wall_start``); ``events-unique``: no event twice in
  ``{p}:events:{source}`` within one session of its stream.
- ``one-aggregator``: at most one ``mmlm-agg:<source>:*`` actor ALIVE per source.
- ``events-in-all``: every event of ``{p}:events:{source}`` is also in ``{p}:events``.
- ``consumer-acked``: the audit group got every event of ``{p}:events`` and has nothing
  pending (XPENDING).

Some faults check more (``Fault.check``): ``backlog-delivered`` (every window produced while
the Publisher held a backlog reached Redis), ``reconnect-attempts`` (more than 1,100 refused
connects while the source was gone), ``timeout-path`` (the hung encoder was noticed by the
call timeout), ``newer-delivered`` and ``dead-lettered`` (the audit group delivers a newer
event type with its unknown field and dead-letters only what no version can read).

The returned list is a ``Violations`` (a ``list[str]``) that also carries the measurements:
``windows_lost`` (missing hop slots outside reconnecting gaps), ``duplicates`` (windows and
events), ``orphaned_events``, ``max_lag_s`` (publication minus wall start of a window).
``run_fault`` injects one ``Fault``, measures the recovery (fault end until both streams are
``streaming`` and each published a new window) and checks.

Kept free of pytest so ``benchmarks/chaos.py`` runs the same code.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:  # media.py and redis_fixtures.py live in tests/
    sys.path.insert(0, str(_TESTS))

import httpx2 as httpx  # noqa: E402
import redis  # noqa: E402
from media import TcpTsServer, mpegts_bytes  # noqa: E402
from redis_fixtures import RedisServer, free_port  # noqa: E402

from mmlm_stream.bus.client import Subscriber  # noqa: E402
from mmlm_stream.cli import ray_driver as driver  # noqa: E402
from mmlm_stream.config import Config  # noqa: E402
from mmlm_stream.config.api import ApiConfig  # noqa: E402
from mmlm_stream.config.bus import RedisConfig  # noqa: E402
from mmlm_stream.config.decode import DecodeConfig, ReconnectConfig  # noqa: E402
from mmlm_stream.config.events import EventsConfig  # noqa: E402
from mmlm_stream.config.live import LiveConfig  # noqa: E402
from mmlm_stream.config.models import ModelsConfig  # noqa: E402
from mmlm_stream.config.supervisor import SupervisorConfig  # noqa: E402
from mmlm_stream.config.window import WindowConfig  # noqa: E402
from mmlm_stream.deployments.encoder import DEPLOYMENT_NAMES  # noqa: E402
from mmlm_stream.records.schema import utc_stamp  # noqa: E402

logger = logging.getLogger(__name__)

TOKEN = "chaos-s3cret"
SOURCES = ("cam1", "cam2")
AUDIT_GROUP = "chaos-audit"
ENCODER_DEPLOYMENTS = tuple(DEPLOYMENT_NAMES.values())
"""Every encoder deployment name; a model set deploys only some (``deployed_encoders``)."""
# One replica per encoder modality, so that each modality's replica can be killed on its own (the
# default CPU layout runs them all in one "Encoders" replica).
SPLIT_SERVE_CONFIG = Path(__file__).resolve().parents[2] / "deployments" / "local-cpu-split.yaml"
TERMINAL_STATES = frozenset({"failed", "stopped", "ended"})
TONE_RULE = {"type": "sound", "name": "tone", "alarm": False, "above_dbfs": -30.0}
"""The clips carry a steady 440 Hz sine (about -13 dBFS RMS): this rule keeps a ``sound/loud``
event open for as long as a stream runs, so ``events-closed`` has something to check (the
tiny models raise no events on grey frames)."""
STATE_SETTLE_S = 4.0
"""How long ``state-consistent`` lets a transition in flight settle before it reports."""
EVENTS_SETTLE_S = 10.0
"""How long ``events-closed`` lets a closing version in flight arrive before it reports."""
CONSUMER_SETTLE_S = 15.0
"""How long ``consumer-acked`` lets the audit consumer catch up before it reports."""

# Fast settings so the faults fit in about 5 minutes (``ChaosService.build_config``).
RECONNECT = ReconnectConfig(initial_s=0.02, max_s=0.04)
"""Reconnect backoff of live sources: a refused connect fails at once, so a source gone for
``SOURCE_GONE_S`` is tried about 1,400 times (mean delay 0.04 s; 0.05 s gives only about
1,200 on an idle machine, too close to ``MIN_RECONNECT_ATTEMPTS`` on a busy one)."""
CALL_TIMEOUT_S = 8.0
"""``live.call_timeout_s``: a hung encoder fails the analysis after this long."""
SUPERVISOR = SupervisorConfig(restart_initial_s=0.5, restart_max_s=2, reconcile_s=2, stable_s=10)
REDIS_STOPPED_S = 60.0
SOURCE_GONE_S = 60.0
MIN_RECONNECT_ATTEMPTS = 1100
"""A source gone for ``SOURCE_GONE_S`` must be tried more often than this (attempt 1024 once
overflowed the backoff)."""
HUNG_S = 20.0
NEWER_EVENT_TYPE = "person_fell"
"""An event type of a newer producer (this version does not know it)."""

ConfigOverride = Callable[[Config], Config | None] | Mapping[str, Any] | None


class FaultError(RuntimeError):
    """A fault could not be injected (e.g. no such replica): the run says so, not a pass."""


# --------------------------------------------------------------------------- small helpers


def now_ms() -> int:
    return int(time.time() * 1000)


def wall_s(stamp: str | None) -> float | None:
    """An ISO-8601 stamp (``...Z``) as epoch seconds."""
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _clock(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "?"
    moment = datetime.fromtimestamp(epoch_s)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _entry_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def _one_line(text: str | None, limit: int = 160) -> str | None:
    """The first line of a reason, at most ``limit`` characters (Ray errors run long)."""
    if not text:
        return text
    line = text.strip().splitlines()[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(config: Config, override: ConfigOverride) -> Config:
    """``override``: a callable that returns the edited Config (Config is frozen: use
    ``model_copy(update=...)``), or a nested mapping merged into the config's JSON form
    (e.g. ``{"decode": {"reconnect": {"max_s": 1}}}``); either may name fields that exist
    only in a newer ``Config``: they are validated by it."""
    if override is None:
        return config
    if callable(override):
        edited = override(config)
        return config if edited is None else edited
    return Config.model_validate(_deep_merge(config.model_dump(mode="json"), override))


def env_override() -> dict[str, Any]:
    """``CHAOS_CONFIG``: a JSON object merged into the chaos config (no code edit needed)."""
    raw = os.environ.get("CHAOS_CONFIG", "").strip()
    return json.loads(raw) if raw else {}


def _until(
    check: Callable[[], Any], timeout: float, every: float = 0.5
) -> Any:  # the truthy result or None
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(every)


# --------------------------------------------------------------------------- Ray actors


@dataclass(frozen=True)
class ActorInfo:
    actor_id: str
    class_name: str
    name: str
    state: str
    pid: int | None


_STATE_API: bool | None = None  # None: not tried yet


def list_ray_actors(alive_only: bool = True) -> list[ActorInfo]:
    """The actors of the Ray this process is connected to.

    ``ray.util.state.list_actors`` first; it needs the dashboard's API server, which
    ``describe.start_ray`` does not start (``include_dashboard=False``), so the GCS actor
    table (``ray._private.state.actors()``, same source of truth, no HTTP) is the fallback.
    """
    global _STATE_API
    import ray

    if not ray.is_initialized():
        raise FaultError("Ray is not initialised in this process")
    if _STATE_API is not False:
        try:
            from ray.util.state import list_actors

            rows = list_actors(
                filters=[("state", "=", "ALIVE")] if alive_only else None,
                limit=10_000,
                timeout=5,
                detail=True,
                raise_on_missing_output=False,
            )
            _STATE_API = True
            return [ActorInfo(r.actor_id, r.class_name, r.name or "", r.state, r.pid) for r in rows]
        except Exception:
            if _STATE_API:
                raise
            _STATE_API = False
    from ray._private import state as ray_state

    out = []
    for actor_id, info in ray_state.actors().items():
        actor = ActorInfo(
            actor_id,
            info.get("ActorClassName", ""),
            info.get("Name", "") or "",
            info.get("State", ""),
            info.get("Pid") or None,
        )
        if not alive_only or actor.state == "ALIVE":
            out.append(actor)
    return out


def replica_actors(deployment: str, app: str | None = None) -> list[ActorInfo]:
    """ALIVE replica actors of a Serve deployment (class ``ServeReplica:<app>:<deployment>``)."""
    app = app or driver.APP_NAME
    return [
        a
        for a in list_ray_actors()
        if a.class_name == f"ServeReplica:{app}:{deployment}"
        or (a.class_name.startswith("ServeReplica:") and a.class_name.endswith(f":{deployment}"))
    ]


def aggregator_actors(source: str) -> list[ActorInfo]:
    """ALIVE aggregator actors of a source (named ``mmlm-agg:<source>:<8 hex>``)."""
    return [a for a in list_ray_actors() if a.name.startswith(f"mmlm-agg:{source}:")]


def deployed_encoders(app: str | None = None) -> list[str]:
    """Encoder deployments that have an ALIVE replica now, in DEPLOYMENT_NAMES order."""
    classes = {a.class_name.rsplit(":", 1)[-1] for a in list_ray_actors()}
    return [name for name in ENCODER_DEPLOYMENTS if name in classes]


def _signal_all(actors: list[ActorInfo], sig: signal.Signals, what: str) -> list[int]:
    pids = [a.pid for a in actors if a.pid]
    if not pids:
        raise FaultError(f"{what}: no ALIVE actor with a pid")
    for pid in pids:
        os.kill(pid, sig)
    logger.warning("chaos: %s %s (pids %s)", sig.name, what, pids)
    return pids


def kill_replica(deployment_name: str, *, app: str | None = None) -> list[int]:
    """SIGKILL every ALIVE replica of a Serve deployment; returns the pids."""
    return _signal_all(replica_actors(deployment_name, app), signal.SIGKILL, deployment_name)


def kill_aggregator(source: str) -> list[int]:
    """SIGKILL the ALIVE aggregator actor(s) of ``source``; returns the pids."""
    return _signal_all(aggregator_actors(source), signal.SIGKILL, f"aggregator of {source}")


def pause_replica(deployment_name: str, seconds: float, *, app: str | None = None) -> list[int]:
    """SIGSTOP the replica(s) of a deployment, wait, SIGCONT (a hung process, not a dead one)."""
    pids = _signal_all(replica_actors(deployment_name, app), signal.SIGSTOP, deployment_name)
    try:
        time.sleep(seconds)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # killed meanwhile (health check)
                os.kill(pid, signal.SIGCONT)
    return pids


def _service(service: ChaosService | None) -> ChaosService:
    service = service or ChaosService.current
    if service is None:
        raise FaultError("no ChaosService running")
    return service


def stop_redis(seconds: float, *, service: ChaosService | None = None) -> None:
    """``redis-server`` stopped (SIGTERM) for ``seconds``, then started on the same port
    (``RedisServer`` keeps its port). Without persistence its data is gone afterwards."""
    server = _service(service).redis_server
    server.stop()
    try:
        time.sleep(seconds)
    finally:
        server.start()


def pause_redis(seconds: float, *, service: ChaosService | None = None) -> None:
    """``CLIENT PAUSE <ms> ALL``: the server holds every client's commands for ``seconds``."""
    svc = _service(service)
    client = svc.redis_server.client(socket_timeout=5)
    try:
        client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
    finally:
        client.close()
    time.sleep(seconds)


def tcp_attempt_fails() -> int | None:
    """``AttemptFails`` of ``/proc/net/snmp``: TCP connects of this network namespace that
    failed from SYN-SENT (a refused connect counts one); None where it cannot be read."""
    try:
        rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
        header, values = [r for r in rows if r and r[0] == "Tcp:"][:2]
        return int(values[header.index("AttemptFails")])
    except (OSError, ValueError, IndexError):
        return None


def _refused(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


def source_gone(
    source: str, seconds: float, *, service: ChaosService | None = None, baseline_s: float = 2.0
) -> dict[str, Any]:
    """The source's TCP server closed (connection and listener) for ``seconds``, then back on
    the same port. Returns ``refused_connects``: how many connects to the closed port were
    refused meanwhile, i.e. the decoder's reconnect attempts (the namespace's ``AttemptFails``
    counter, less this function's probe and the rate of the ``baseline_s`` before; None when
    the counter cannot be read), and ``port_refused``: a probe found the port closed."""
    server = _service(service).sources[source]
    before = tcp_attempt_fails()
    time.sleep(baseline_s)
    start = tcp_attempt_fails()
    server.stop()
    started = time.monotonic()
    refused = _refused(server.port)
    try:
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    finally:
        end = tcp_attempt_fails()
        gone_s = time.monotonic() - started
        server.start()
    attempts = None
    if before is not None and start is not None and end is not None:
        noise = (start - before) / baseline_s * gone_s
        attempts = max(0, round(end - start - (1 if refused else 0) - noise))
    logger.warning("chaos: %s gone %.1f s: %s refused connects", source, gone_s, attempts)
    return {
        "source": source,
        "gone_s": round(gone_s, 1),
        "refused_connects": attempts,
        "port_refused": refused,
    }


def check_reconnect_attempts(service: ChaosService, injected: Mapping[str, Any]) -> list[str]:
    """``reconnect-attempts``: a source gone for ``SOURCE_GONE_S`` was tried more than
    ``MIN_RECONNECT_ATTEMPTS`` times (and its port really refused connections)."""
    out = []
    sid = injected["source"]
    if not injected["port_refused"]:
        out.append(f"fault-injected: {sid}: its port still accepted connections while 'gone'")
    attempts = injected["refused_connects"]
    if attempts is not None and attempts <= MIN_RECONNECT_ATTEMPTS:
        out.append(
            f"reconnect-attempts: {sid}: {attempts} refused connects in the "
            f"{injected['gone_s']:.0f} s the source was gone, not more than "
            f"{MIN_RECONNECT_ATTEMPTS} (reconnect {RECONNECT.initial_s}..{RECONNECT.max_s} s)"
        )
    return out


def publisher_backlog(
    *,
    service: ChaosService | None = None,
    pause_s: float = 10.0,
    min_backlog: int = 2,
    build_timeout_s: float = 7.0,
) -> dict[str, Any]:
    """SIGKILL of the Publisher replica while it holds a backlog: ``CLIENT PAUSE <ms> WRITE``
    (reads go on, so the harness still sees), wait until each stream produced ``min_backlog``
    windows (API ``stats.windows``) that Redis cannot have, SIGKILL the Publisher, let the
    pause run out (``CLIENT UNPAUSE`` at ``pause_s`` at the latest). The records are then in
    the dead replica's buffer and in the Decoder's outbox, which must hand them to the next
    replica (``check_backlog_delivered``)."""
    svc = _service(service)
    assert svc.redis is not None
    control = svc.redis_server.client(socket_timeout=5)
    sids = svc.source_ids
    counted = {sid: svc.view(sid).api_windows for sid in sids}
    started_ms = now_ms()
    started = time.monotonic()
    control.execute_command("CLIENT", "PAUSE", int(pause_s * 1000), "WRITE")
    try:
        backlog: dict[str, int] = {}

        def built() -> bool:
            backlog.update({sid: svc.view(sid).api_windows - counted[sid] for sid in sids})
            return all(n >= min_backlog for n in backlog.values())

        _until(built, build_timeout_s)
        in_redis = {sid: sum(1 for ms, _w in svc.windows(sid) if ms >= started_ms) for sid in sids}
        if not any(backlog.values()):
            raise FaultError(f"Publisher: no backlog built in {build_timeout_s:.0f} s: {backlog}")
        pids = kill_replica("Publisher")
        killed_s = time.monotonic() - started
        time.sleep(max(0.0, pause_s - (time.monotonic() - started)))
    finally:
        with contextlib.suppress(redis.RedisError):
            control.execute_command("CLIENT", "UNPAUSE")
        control.close()
    return {
        "paused_ms": started_ms,
        "counted": counted,
        "backlog": backlog,
        "in_redis_at_kill": in_redis,
        "killed_after_s": round(killed_s, 1),
        "pids": pids,
    }


def check_backlog_delivered(service: ChaosService, injected: Mapping[str, Any]) -> list[str]:
    """``backlog-delivered``: every window a stream produced since the pause began (API
    ``stats.windows``) is in Redis now, the backlog the killed Publisher held included
    (a window still in flight is given a few seconds)."""
    out = []
    since = injected["paused_ms"]
    for sid in service.source_ids:
        produced = published = 0

        def caught_up(s: str = sid) -> bool:
            nonlocal produced, published
            produced = service.view(s).api_windows - injected["counted"][s] - 1  # 1 in flight
            published = sum(1 for ms, _w in service.windows(s) if ms >= since)
            return published >= produced

        if not _until(caught_up, 8.0, every=1.0):
            out.append(
                f"backlog-delivered: {sid}: {produced + 1} windows produced since Redis writes "
                f"were paused ({injected['backlog'][sid]} held when the Publisher was killed), "
                f"only {published} reached {service.prefix}:windows:{sid}"
            )
    return out


def newer_producer(
    *, service: ChaosService | None = None, source: str = "cam1", timeout_s: float = 15.0
) -> dict[str, Any]:
    """A producer one schema version ahead: an event of a type this version does not know
    (``NEWER_EVENT_TYPE``) with a field it does not know, XADDed as raw JSON to
    ``{p}:events:<source>`` and ``{p}:events`` (a real event's JSON, edited), plus one entry
    that no version can read (``json`` = ``not json``) in ``{p}:events``. Waits until the
    audit consumer delivered the first and dead-lettered the second (bounded)."""
    svc = _service(service)
    assert svc.redis is not None and svc.audit is not None
    audit = svc.audit
    real = [e for _ms, e in svc.events(source) if e.get("type") != "stream"] or [
        e for _ms, e in svc.events(source)
    ]
    if not real:
        raise FaultError(f"no event of {source} to build a newer one from")
    record = dict(real[-1])
    moment = now_ms()
    record.update(
        {
            "id": f"{source}:{NEWER_EVENT_TYPE}:chaos:{moment}",
            "type": NEWER_EVENT_TYPE,
            "key": "person",
            "ongoing": False,
            "description": "a person fell (an event type of a newer producer)",
            "wall_start": utc_stamp(datetime.fromtimestamp(moment / 1000, UTC)),
            "posture": {"from": "standing", "to": "lying", "after_s": 0.8},  # a newer field
        }
    )
    raw = json.dumps(record, separators=(",", ":"))
    entries = {
        key: svc.redis.xadd(key, {"json": raw})
        for key in (f"{svc.prefix}:events:{source}", f"{svc.prefix}:events")
    }
    bad = svc.redis.xadd(f"{svc.prefix}:events", {"json": "not json"})
    dead = f"{svc.prefix}:dead:{audit.group}"

    def handled() -> bool:
        letters = svc.redis.xrange(dead)  # type: ignore[union-attr]
        return record["id"] in audit.seen() and any(f.get(b"id") == bad for _i, f in letters)

    _until(handled, timeout_s)
    return {
        "id": record["id"],
        "entries": {k: v.decode() for k, v in entries.items()},
        "unreadable_entry": bad.decode(),
        "dead_letters": dead,
    }


def check_newer_schema(service: ChaosService, injected: Mapping[str, Any]) -> list[str]:
    """``newer-delivered``: the audit group delivered the newer producer's event, as an unknown
    type with its unknown field kept, and did not dead-letter it; ``dead-lettered``: the
    unreadable entry is in the group's dead letters with a reason, and acknowledged."""
    assert service.redis is not None and service.audit is not None
    audit, out = service.audit, []
    event_id, bad = injected["id"], injected["unreadable_entry"]
    dead = injected["dead_letters"]
    letters = {f.get(b"id", b"").decode(): f for _i, f in service.redis.xrange(dead)}
    newer = audit.unknown.get(event_id)
    if event_id not in audit.seen():
        out.append(f"newer-delivered: event {event_id} ({NEWER_EVENT_TYPE}) never delivered to "
                   f"group {audit.group}")  # fmt: skip
    elif newer is None:
        out.append(f"newer-delivered: event {event_id} delivered with known_type True")
    elif "posture" not in newer:
        out.append(f"newer-delivered: event {event_id} lost its unknown field: {newer[:200]}")
    for stream, entry in injected["entries"].items():
        if entry in letters:
            reason = letters[entry].get(b"reason", b"").decode()
            out.append(f"newer-delivered: entry {entry} of {stream} is in {dead} ({reason})")
    letter = letters.get(bad)
    if letter is None:
        out.append(f"dead-lettered: the unreadable entry {bad} of {audit.stream} is not in {dead}")
    else:
        if not letter.get(b"reason"):
            out.append(f"dead-lettered: {dead} holds entry {bad} without a reason")
        stream = letter.get(b"stream", b"").decode()
        if letter.get(b"json") != b"not json" or stream != audit.stream:
            out.append(f"dead-lettered: {dead} holds entry {bad} altered: {letter}")
    pending = service.redis.xpending_range(audit.stream, audit.group, bad, bad, 1)
    if pending:
        out.append(f"dead-lettered: entry {bad} is still pending in group {audit.group}")
    others = sorted(set(letters) - {bad})
    if others:
        out.append(f"dead-lettered: {dead} also holds {others[:5]}, readable entries?")
    return out


def flap_source(
    source: str, seconds: float, every_s: float = 1.0, *, service: ChaosService | None = None
) -> int:
    """Cut the source's client off every ``every_s`` for ``seconds`` (the server keeps
    listening, so each reconnect works and is cut again); returns the cuts."""
    server = _service(service).sources[source]
    cuts = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        server.drop_client()
        cuts += 1
        time.sleep(min(every_s, max(0.0, deadline - time.monotonic())))
    return cuts


# --------------------------------------------------------------------------- audit consumer


class AuditConsumer:
    """A consumer group that reads ``{p}:events`` from the start in a thread and
    acknowledges each event after recording it (what a well-behaved subscriber does)."""

    def __init__(self, url: str, prefix: str, group: str = AUDIT_GROUP) -> None:
        self.group = group
        self.stream = f"{prefix}:events"
        config = RedisConfig(prefix=prefix, embedded=False, retry_initial_s=0.1, retry_max_s=0.5)
        self.subscriber = Subscriber(url, prefix, group=group, consumer="auditor", config=config)
        self.delivered: set[str] = set()
        self.unknown: dict[str, str] = {}  # id -> JSON of events of a type newer than this code
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-audit", daemon=True)

    def start(self) -> AuditConsumer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self.subscriber.iter_events(block_ms=1000, from_start=True):
                    with self._lock:
                        self.delivered.add(event.id)
                        if not event.known_type:
                            self.unknown[event.id] = event.to_json()
                    self.subscriber.commit()
            except Exception as exc:  # keep auditing; the failure itself is reported
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.5)

    def seen(self) -> set[str]:
        with self._lock:
            return set(self.delivered)

    def stop(self) -> None:
        self._stop.set()
        self.subscriber.stop()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.subscriber.close()


class LiveListener:
    """Records the event versions announced on ``{p}:live:*`` (Pub/Sub), so a closing is
    seen even after ``{p}:event:{id}`` was overwritten by a later event with the same id.
    At-most-once by nature: it resubscribes after a Redis outage."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.pattern = f"{prefix}:live:*"
        self._closed: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-live", daemon=True)

    def start(self, timeout: float = 10.0) -> LiveListener:
        self._thread.start()
        self._subscribed.wait(timeout)
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(self.pattern)
                self._subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None or message["type"] != "pmessage":
                        continue
                    data = message["data"]
                    if b'"kind":"event"' not in data[:40]:
                        continue
                    record = json.loads(data)
                    if not record.get("ongoing"):
                        with self._lock:
                            self._closed.add(identity(record))
            except (redis.RedisError, OSError, ValueError):
                self._stop.wait(0.5)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
                    client.close()

    def closed(self) -> set[str]:
        """Identities (``id@wall_start``) of the closed event versions announced so far."""
        with self._lock:
            return set(self._closed)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- the service


@dataclass
class StreamView:
    """What one poll saw of one stream."""

    source: str
    api_state: str | None
    api_reason: str | None
    api_windows: int
    last_window_ms: int | None  # Redis entry time of its newest window
    error: str | None = None


class ChaosService:
    """Redis + two live sources + ``serve`` with both streams added (module docstring).

    ``config``: an override of the chaos config (``apply_override``), e.g. fast supervisor
    backoff; ``CHAOS_CONFIG`` (JSON) is applied after it. ``models`` defaults to the tiny set
    in a cache under ``workdir``.
    """

    current: ClassVar[ChaosService | None] = None

    def __init__(
        self,
        models: ModelsConfig | None = None,
        *,
        config: ConfigOverride = None,
        workdir: Path | None = None,
        sources: Iterable[str] = SOURCES,
        clip_s: float = 4.0,
        window_s: float = 2.0,
        hop_s: float = 2.0,
        redis_appendonly: bool = False,
        port: int | None = None,
        start_timeout_s: float = 180.0,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mmlm-chaos-"))
        self.models = models or ModelsConfig(
            set="tiny", device="cpu", cache_dir=self.workdir / "models"
        )
        self.override = config
        self.source_ids = tuple(sources)
        self.clip_s = clip_s
        self.window_s = window_s
        self.hop_s = hop_s
        self.redis_appendonly = redis_appendonly
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.redis_server = RedisServer(self.workdir / "redis", appendonly=redis_appendonly)
        self.sources: dict[str, TcpTsServer] = {}
        self.config: Config | None = None
        self.http: httpx.Client | None = None
        self.redis: redis.Redis | None = None
        self.audit: AuditConsumer | None = None
        self.live: LiveListener | None = None
        self.prefix = "mmlm"
        # Attribution across faults (run_fault): what earlier checks already reported, and
        # what the harness itself caused (a DELETE/POST reset), so one fault's damage is
        # not reported again by every later one.
        self.known_orphans: set[str] = set()
        self.known_duplicates: set[tuple[str, str, str | None]] = set()
        self.baseline_aggregators: dict[str, set[str]] = {}
        self.fault_ended_at: float | None = None
        self.resets: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------

    def build_config(self) -> Config:
        base = Config(
            decode=DecodeConfig(stall_timeout_s=3, reconnect=RECONNECT),
            models=self.models,
            window=WindowConfig(window_s=self.window_s, hop_s=self.hop_s, max_lateness_s=2.0),
            live=LiveConfig(call_timeout_s=CALL_TIMEOUT_S),
            supervisor=SUPERVISOR,
            redis=RedisConfig(
                url=self.redis_server.url, embedded=False, retry_initial_s=0.2, retry_max_s=1.0
            ),
            api=ApiConfig(api_token=TOKEN, allow_internal=["127.0.0.0/8"]),
            events=EventsConfig.model_validate({"include_defaults": True, "rules": [TONE_RULE]}),
        )
        return apply_override(apply_override(base, self.override), env_override())

    def start(self) -> ChaosService:
        started = time.monotonic()
        self.redis_server.start()
        self.redis = self.redis_server.client(socket_timeout=15, socket_connect_timeout=2)
        payload = mpegts_bytes(self.clip_s)
        for sid in self.source_ids:
            server = TcpTsServer(payload, self.clip_s)
            server.start()
            self.sources[sid] = server
        self.config = self.build_config()
        self.prefix = self.config.redis.prefix
        self.audit = AuditConsumer(self.redis_server.url, self.prefix).start()
        self.live = LiveListener(self.redis_server.url, self.prefix).start()
        driver.start_ray(None)
        driver.run_service(
            self.config,
            SPLIT_SERVE_CONFIG,
            self.redis_server.url,
            host="127.0.0.1",
            port=self.port,
            jobs_dir=self.workdir / "jobs",
        )
        self.http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        ChaosService.current = self
        for sid in self.source_ids:
            self.add_stream(sid)
        left = self.start_timeout_s - (time.monotonic() - started)
        self.wait_streaming(min_windows=2, timeout=max(30.0, left))
        logger.warning("chaos: service up in %.0f s", time.monotonic() - started)
        return self

    def close(self) -> None:
        if ChaosService.current is self:
            ChaosService.current = None
        if self.audit is not None:
            self.audit.stop()
        if self.live is not None:
            self.live.stop()
        if self.http is not None:
            self.http.close()
        with contextlib.suppress(Exception):
            driver.shutdown()
        for server in self.sources.values():
            server.stop()
        if self.redis is not None:
            self.redis.close()
        self.redis_server.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ChaosService:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- streams -----------------------------------------------------------------------

    def add_stream(self, sid: str) -> None:
        assert self.http is not None
        answer = self.http.post("/streams", json={"id": sid, "url": self.sources[sid].url})
        if answer.status_code != 201:
            raise RuntimeError(f"POST /streams {sid}: {answer.status_code} {answer.text}")

    def remove_stream(self, sid: str) -> None:
        assert self.http is not None
        answer = self.http.delete(f"/streams/{sid}")
        if answer.status_code not in (204, 404):
            raise RuntimeError(f"DELETE /streams/{sid}: {answer.status_code} {answer.text}")

    def view(self, sid: str) -> StreamView:
        assert self.http is not None and self.redis is not None
        state = reason = error = None
        windows = 0
        try:
            answer = self.http.get(f"/streams/{sid}")
            if answer.status_code == 200:
                body = answer.json()
                state, reason = body.get("state"), _one_line(body.get("reason"))
                windows = int(body.get("stats", {}).get("windows", 0))
            else:
                error = f"GET /streams/{sid}: {answer.status_code}"
        except httpx.HTTPError as exc:
            error = f"GET /streams/{sid}: {type(exc).__name__}: {exc}"
        last = None
        try:
            newest = self.redis.xrevrange(f"{self.prefix}:windows:{sid}", count=1)
            last = _entry_ms(newest[0][0]) if newest else None
        except redis.RedisError as exc:
            error = (error + "; " if error else "") + f"redis: {exc}"
        return StreamView(sid, state, reason, windows, last, error)

    def wait_streaming(self, min_windows: int = 1, timeout: float = 60.0) -> None:
        """Until every stream is ``streaming`` with at least ``min_windows`` windows (API)."""
        views: dict[str, StreamView] = {}

        def ready() -> bool:
            views.update({sid: self.view(sid) for sid in self.source_ids})
            return all(
                v.api_state == "streaming" and v.api_windows >= min_windows for v in views.values()
            )

        if not _until(ready, timeout):
            raise RuntimeError(
                f"streams not streaming with {min_windows} windows in {timeout:.0f} s: "
                + "; ".join(_describe_view(v) for v in views.values())
            )

    def wait_window_after(self, sid: str, after_ms: int, timeout: float) -> bool:
        return bool(
            _until(
                lambda: (v := self.view(sid)).last_window_ms and v.last_window_ms > after_ms,
                timeout,
            )
        )

    @property
    def fresh_s(self) -> float:
        """How old a stream's newest window may be while it runs fine (window end, lateness,
        publication, slack for two streams on two cores)."""
        assert self.config is not None
        return self.window_s + self.config.window.max_lateness_s + 2 * self.hop_s + 6.0

    def healthy(self, sid: str) -> str | None:
        """None when the stream runs as it should, else why not."""
        view = self.view(sid)
        if view.error:
            return view.error
        if view.api_state != "streaming":
            return f"API state {view.api_state!r} ({view.api_reason})"
        if view.last_window_ms is None or now_ms() - view.last_window_ms > self.fresh_s * 1000:
            return "no recent window in Redis"
        entry = self.redis_stream_entry(sid)
        redis_state = ((entry or {}).get("state") or {}).get("state")
        if redis_state != "streaming":
            return f"{self.prefix}:streams state {redis_state!r}"
        return None

    def ensure_healthy(self, timeout: float = 15.0, reset_timeout: float = 90.0) -> list[str]:
        """Precondition of a fault: every stream healthy. A stream an earlier fault left
        broken is removed and added again (DELETE, POST); returns notes of what was done.
        Orphans the reset itself creates are excused (DELETE does not publish closings)."""
        notes: list[str] = []
        why: dict[str, str | None] = {}

        def all_healthy() -> bool:
            why.update({sid: self.healthy(sid) for sid in self.source_ids})
            return not any(why.values())

        if _until(all_healthy, timeout):
            return notes
        broken = [sid for sid, reason in why.items() if reason]
        reset_ms = now_ms()
        for sid in broken:
            notes.append(f"precondition: {sid} was not healthy ({why[sid]}): re-added it")
            self.resets.append(sid)
            with contextlib.suppress(Exception):
                self.remove_stream(sid)
        # Wait until the old aggregators are gone, then start again.
        _until(lambda: not any(aggregator_actors(s) for s in broken), 20.0)
        for sid in broken:
            self.add_stream(sid)
        for sid in broken:
            if not self.wait_window_after(sid, reset_ms, reset_timeout):
                raise RuntimeError(
                    f"precondition: {sid} did not come back after DELETE/POST within "
                    f"{reset_timeout:.0f} s: {_describe_view(self.view(sid))}"
                )
        if not _until(all_healthy, reset_timeout):
            raise RuntimeError(
                "precondition: streams not healthy after a reset: "
                + "; ".join(f"{s}: {r}" for s, r in why.items() if r)
            )
        # What the reset left open is the harness's doing, not the next fault's.
        for sid in broken:
            self.known_orphans |= {identity(e) for e in _orphans(self, sid, ignore=set())[0]}
        return notes

    def redis_stream_entry(self, sid: str) -> dict[str, Any] | None:
        assert self.redis is not None
        raw = self.redis.hget(f"{self.prefix}:streams", sid)
        return json.loads(raw) if raw else None

    # -- records -----------------------------------------------------------------------

    def windows(self, sid: str) -> list[tuple[int, dict[str, Any]]]:
        assert self.redis is not None
        return [
            (_entry_ms(entry_id), json.loads(fields[b"json"]))
            for entry_id, fields in self.redis.xrange(f"{self.prefix}:windows:{sid}")
        ]

    def events(self, sid: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        """The events of ``{p}:events[:sid]``; an entry no one can read (what the
        ``subscriber-schema-behind`` fault adds) is skipped: dead letters are checked there."""
        assert self.redis is not None
        key = f"{self.prefix}:events" + (f":{sid}" if sid else "")
        out = []
        for entry_id, fields in self.redis.xrange(key):
            try:
                record = json.loads(fields[b"json"])
            except (KeyError, ValueError):
                continue
            if isinstance(record, dict) and "id" in record and "type" in record:
                out.append((_entry_ms(entry_id), record))
        return out

    def latest_event(self, event_id: str) -> dict[str, Any] | None:
        assert self.redis is not None
        raw = self.redis.hget(f"{self.prefix}:event:{event_id}", "json")
        return json.loads(raw) if raw else None


def _describe_view(view: StreamView) -> str:
    age = (
        f"newest window {(now_ms() - view.last_window_ms) / 1000:.1f} s ago"
        if view.last_window_ms
        else "no window in Redis"
    )
    reason = f" ({view.api_reason})" if view.api_reason else ""
    error = f"; {view.error}" if view.error else ""
    return f"{view.source}: state {view.api_state!r}{reason}, {age}{error}"


# --------------------------------------------------------------------------- invariants


class Violations(list[str]):
    """Broken invariants, one line each (empty = all good), plus the measurements."""

    def __init__(self, lines: Iterable[str] = ()) -> None:
        super().__init__(lines)
        self.windows_lost = 0
        self.max_lag_s = 0.0  # newest publication minus wall_start of a window (informative)
        self.duplicates = 0
        self.orphaned_events = 0
        self.orphan_ids: set[str] = set()
        self.duplicate_keys: set[tuple[str, str, str | None]] = set()


def _stream_events(service: ChaosService, sid: str) -> list[dict[str, Any]]:
    """The source's ``stream`` events, by wall time then publication order."""
    found = [(wall_s(e.get("wall_start")) or 0.0, ms, e) for ms, e in service.events(sid)]
    return [e for _w, _ms, e in sorted(found, key=lambda t: (t[0], t[1])) if e["type"] == "stream"]


def _check_windows(service: ChaosService, sid: str, since_s: float, out: Violations) -> None:
    hop = service.hop_s
    entries = service.windows(sid)
    windows = [(wall_s(w.get("wall_start")), w) for _ms, w in entries]
    missing_wall = [w["window_id"] for t, w in windows if t is None]
    if missing_wall:
        out.append(f"windows-continuous: {sid}: windows without wall_start: {missing_wall[:5]}")
    timed = sorted(((t, w) for t, w in windows if t is not None), key=lambda p: p[0])
    stream_events = [(wall_s(e.get("wall_start")), e["key"]) for e in _stream_events(service, sid)]

    def excused(start: float, end: float) -> bool:
        """A reconnecting, then a streaming event within the gap (a hop of slack each side:
        window starts sit on the hop grid, transitions do not)."""
        reconnects = [
            t
            for t, k in stream_events
            if k == "reconnecting" and t is not None and start - hop <= t <= end + hop
        ]
        if not reconnects:
            return False
        first = min(reconnects)
        return any(
            k == "streaming" and t is not None and first <= t <= end + hop for t, k in stream_events
        )

    for (t0, w0), (t1, w1) in itertools.pairwise(timed):
        if t1 < since_s:
            continue
        gap = t1 - t0
        if gap > hop * 1.5 and not excused(t0, t1):
            lost = max(1, round(gap / hop) - 1)
            out.windows_lost += lost
            out.append(
                f"windows-continuous: {sid}: {gap:.1f} s between window {w0['window_id']} "
                f"(wall {_clock(t0)}) and {w1['window_id']} (wall {_clock(t1)}), more than "
                f"hop*1.5 = {hop * 1.5:.1f} s with no reconnecting->streaming stream event "
                f"inside: {lost} window(s) lost"
            )
    lags = [
        ms / 1000 - t
        for (ms, _w), (t, _same) in zip(entries, windows, strict=True)
        if t is not None and t >= since_s
    ]
    out.max_lag_s = max([out.max_lag_s, *lags])
    newest = timed[-1][0] if timed else None
    if newest is None or time.time() - newest > service.fresh_s + service.window_s:
        ago = "never" if newest is None else f"{time.time() - newest:.1f} s ago"
        if newest is not None:  # the slots since then that should be out by now
            out.windows_lost += max(1, int((time.time() - newest - service.fresh_s) / hop))
        out.append(
            f"windows-tail: {sid}: newest window started {ago} (the stream stopped "
            "publishing windows)"
        )

    seen = Counter((w["window_id"], w.get("wall_start")) for _t, w in windows)
    for (wid, wall), count in sorted(seen.items(), key=lambda kv: str(kv[0])):
        key = (sid, wid, wall)
        if count > 1 and key not in service.known_duplicates:
            out.duplicates += count - 1
            out.duplicate_keys.add(key)
            out.append(
                f"windows-unique: {sid}: window {wid} (wall_start {wall}) is in "
                f"{service.prefix}:windows:{sid} {count} times"
            )


def _states(service: ChaosService, sid: str) -> tuple[str | None, str | None, str | None, str]:
    view = service.view(sid)
    entry = service.redis_stream_entry(sid)
    redis_state = ((entry or {}).get("state") or {}).get("state") if entry else None
    stream_events = _stream_events(service, sid)
    last_event = stream_events[-1]["key"] if stream_events else None
    detail = f"reason {view.api_reason!r}" if view.api_reason else ""
    if entry is None:
        detail += f"{'; ' if detail else ''}no {sid} field in {service.prefix}:streams"
    if view.error:
        detail += f"{'; ' if detail else ''}{view.error}"
    return view.api_state, redis_state, last_event, detail


def _check_states(service: ChaosService, sid: str, out: Violations) -> None:
    """The three must agree; a transition in flight is given a few seconds to settle."""
    states: tuple[str | None, str | None, str | None, str] = (None, None, None, "")

    def agree() -> bool:
        nonlocal states
        states = _states(service, sid)
        return states[0] is not None and states[0] == states[1] == states[2]

    if not _until(agree, STATE_SETTLE_S, every=1.0):
        api, red, last, detail = states
        out.append(
            f"state-consistent: {sid}: API says {api!r}, {service.prefix}:streams says {red!r}, "
            f"last stream event says {last!r}" + (f" ({detail})" if detail else "")
        )


def identity(event: Mapping[str, Any]) -> str:
    """What makes a live event version the same event again, as the bus keys it: its id
    (which repeats in every session: media time starts at 0 again) plus ``wall_start``."""
    return f"{event['id']}@{event.get('wall_start')}"


def _sessions(service: ChaosService, sid: str) -> list[float]:
    """Wall times at which an analysis of the stream began (its ``connecting`` events)."""
    return sorted(
        wall_s(e.get("wall_start")) or 0.0
        for e in _stream_events(service, sid)
        if e["key"] == "connecting"
    )


def _session_of(sessions: list[float], event: Mapping[str, Any]) -> int:
    t = wall_s(event.get("wall_start")) or 0.0
    return sum(1 for start in sessions if start <= t)


def _orphans(
    service: ChaosService, sid: str, ignore: set[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Opened events (an ``ongoing`` version in the stream) that no one can close any more:
    (events, the reason of each). Still open is fine for the newest event of its (type, key)
    opened in the current session of a running stream by an aggregator still alive.

    Closed means: ``{p}:event:{id}`` holds a closing version of this event (same session;
    a closing re-stamped with another ``wall_start`` still counts here, ``events-unique``
    reports that). Event ids repeat from session to session, so when that hash already holds
    a later session's event of the same id, the closing announced on ``{p}:live:{source}``
    (``LiveListener``) is the evidence instead."""
    entries = [e for _ms, e in service.events(sid)]
    opened = [e for e in entries if e.get("ongoing")]
    if not opened:
        return [], []
    sessions = _sessions(service, sid)
    session_start = sessions[-1] if sessions else 0.0
    api_state = service.view(sid).api_state
    alive = {a.name for a in aggregator_actors(sid)}
    baseline = service.baseline_aggregators.get(sid)
    aggregator_gone = bool(baseline) and not (baseline & alive)
    fault_end = service.fault_ended_at
    announced = service.live.closed() if service.live is not None else set()
    newest: dict[tuple[str, str], float] = {}
    for e in entries:
        t = wall_s(e.get("wall_start")) or 0.0
        newest[(e["type"], e["key"])] = max(newest.get((e["type"], e["key"]), 0.0), t)
    found, reasons = [], []
    for e in opened:
        if identity(e) in ignore or identity(e) in announced:
            continue
        latest = service.latest_event(e["id"])
        same = latest is not None and _session_of(sessions, latest) == _session_of(sessions, e)
        if same and not latest.get("ongoing"):  # type: ignore[union-attr]
            continue  # closed
        t = wall_s(e.get("wall_start")) or 0.0
        if latest is None:
            why = f"no latest version in {service.prefix}:event:{e['id']}"
        elif not same:
            why = (
                f"{service.prefix}:event:{e['id']} now holds a later session's event with the "
                f"same id (wall_start {latest.get('wall_start')}) and no closing of this one "
                f"was announced on {service.prefix}:live:{sid}"
            )
        elif newest[(e["type"], e["key"])] > t:
            why = f"a later {e['type']}/{e['key']} event was opened after it"
        elif t < session_start:
            why = f"a new session of {sid} began at {_clock(session_start)} after it opened"
        elif api_state in TERMINAL_STATES or api_state is None:
            why = f"the stream is {api_state!r}, nothing will close it"
        elif aggregator_gone and (fault_end is None or t <= fault_end):
            why = f"the aggregator that held it ({', '.join(sorted(baseline or ()))}) is gone"
        else:
            continue  # still legitimately open
        found.append(e)
        reasons.append(why)
    return found, reasons


def _check_events(service: ChaosService, sid: str, since_ms: int, out: Violations) -> None:
    found: list[dict[str, Any]] = []
    reasons: list[str] = []

    def all_closed() -> bool:  # a closing in flight is given EVENTS_SETTLE_S to arrive
        nonlocal found, reasons
        found, reasons = _orphans(service, sid, service.known_orphans)
        return not found

    _until(all_closed, EVENTS_SETTLE_S, every=1.0)
    for e, why in zip(found, reasons, strict=True):
        out.orphaned_events += 1
        out.orphan_ids.add(identity(e))
        out.append(
            f"events-closed: {sid}: event {e['id']} ({e['type']}/{e['key']}, opened "
            f"{_clock(wall_s(e.get('wall_start')))}) is still ongoing "
            f"{EVENTS_SETTLE_S:.0f} s after the check began: {why}"
        )
    _check_event_duplicates(service, sid, out)
    all_ids = {e["id"] for _ms, e in service.events()}
    missing = [
        e["id"] for ms, e in service.events(sid) if ms >= since_ms and e["id"] not in all_ids
    ]
    if missing:
        out.append(
            f"events-in-all: {sid}: {len(missing)} event(s) of {service.prefix}:events:{sid} "
            f"missing from {service.prefix}:events: {missing[:5]}"
        )


def _check_event_duplicates(service: ChaosService, sid: str, out: Violations) -> None:
    """One entry per event in ``{p}:events:{source}``: two entries with the same id in the
    same session of the stream (no ``connecting`` stream event between their wall starts)
    are one event published twice (e.g. its closing version with another ``wall_start``).
    The same id in two sessions is two events: media time starts again at 0 in each."""
    entries = [e for _ms, e in service.events(sid) if e["type"] != "stream"]
    sessions = _sessions(service, sid)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e["id"], _session_of(sessions, e)), []).append(e)
    for (event_id, _session), versions in sorted(groups.items()):
        key = (sid, f"event:{event_id}", versions[0].get("wall_start"))
        if len(versions) < 2 or key in service.known_duplicates:
            continue
        out.duplicates += len(versions) - 1
        out.duplicate_keys.add(key)
        shown = ", ".join(
            f"{'ongoing' if v.get('ongoing') else 'closed'} @ {v.get('wall_start')}"
            for v in versions
        )
        out.append(
            f"events-unique: {sid}: event {event_id} ({versions[0]['type']}/"
            f"{versions[0]['key']}) is in {service.prefix}:events:{sid} {len(versions)} times "
            f"in one session ({shown})"
        )


def _check_aggregators(service: ChaosService, sid: str, out: Violations) -> None:
    alive = aggregator_actors(sid)
    if len(alive) > 1:
        out.append(
            f"one-aggregator: {sid}: {len(alive)} aggregator actors ALIVE: "
            + ", ".join(sorted(a.name for a in alive))
        )


def _check_consumer(service: ChaosService, out: Violations) -> None:
    assert service.audit is not None and service.redis is not None
    audit = service.audit
    problem: list[str] = []

    def done() -> bool:
        problem.clear()
        try:
            ids = {e["id"] for _ms, e in service.events()}
            info = service.redis.xpending(audit.stream, audit.group)
        except redis.ResponseError as exc:  # NOGROUP: the group is gone
            problem.append(f"group {audit.group} on {audit.stream}: {exc}")
            return False
        undelivered = ids - audit.seen()
        if undelivered:
            problem.append(
                f"{len(undelivered)} event(s) of {audit.stream} never delivered to group "
                f"{audit.group}: {sorted(undelivered)[:3]}"
            )
        if info["pending"]:
            problem.append(f"{info['pending']} entries pending in group {audit.group} (XPENDING)")
        return not problem

    if not _until(done, CONSUMER_SETTLE_S, every=1.0):
        out.extend(f"consumer-acked: {p}" for p in problem)
    if audit.errors:
        out.append(f"consumer-acked: the audit consumer raised: {audit.errors[-1]}")
        audit.errors.clear()


def check_invariants(service: ChaosService, since_ms: int) -> Violations:
    """Every invariant of the module docstring over what was published since ``since_ms``
    (epoch ms); empty = all good. Damage already reported by an earlier check (orphans,
    duplicates in ``service.known_*``) is not reported again."""
    out = Violations()
    since_s = since_ms / 1000
    for sid in service.source_ids:
        for check in (
            lambda s=sid: _check_windows(service, s, since_s, out),
            lambda s=sid: _check_states(service, s, out),
            lambda s=sid: _check_events(service, s, since_ms, out),
            lambda s=sid: _check_aggregators(service, s, out),
        ):
            try:
                check()
            except (redis.RedisError, httpx.HTTPError, FaultError) as exc:
                out.append(f"check-failed: {sid}: {type(exc).__name__}: {exc}")
    try:
        _check_consumer(service, out)
    except redis.RedisError as exc:
        out.append(f"check-failed: consumer: {type(exc).__name__}: {exc}")
    return out


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """One fault: ``inject`` does it and returns when it is over (timed faults block);
    ``check``, if any, gets what ``inject`` returned and returns broken invariants of its own
    (after ``check_invariants``)."""

    name: str
    inject: Callable[[ChaosService], Any]
    description: str = ""
    recovery_timeout_s: float | None = None
    check: Callable[[ChaosService, Any], list[str]] | None = None


def check_timeout_path(service: ChaosService, since_ms: int) -> list[str]:
    """``timeout-path``: a stream went ``reconnecting`` because an encoder call timed out
    (``live.call_timeout_s``), i.e. the hang was noticed rather than waited out."""
    wanted = f"did not answer within {CALL_TIMEOUT_S:g}s"
    reasons = []
    for sid in service.source_ids:
        for ms, e in service.events(sid):
            if ms >= since_ms and e["type"] == "stream" and e["key"] == "reconnecting":
                reasons.append(str((e.get("evidence") or {}).get("stream", {}).get("reason")))
    if any(wanted in r for r in reasons):
        return []
    seen = "; ".join(sorted({_one_line(r, 100) or "" for r in reasons})) or "none"
    return [
        f"timeout-path: no stream went reconnecting with '{wanted}' while the encoder was "
        f"hung (reconnecting reasons: {seen})"
    ]


def standard_faults(
    encoders: Iterable[str] = ENCODER_DEPLOYMENTS, hung_encoder: str = "VisualEncoder"
) -> list[Fault]:
    """The issue's fault list, in order (encoders: those deployed, see ``deployed_encoders``)."""
    faults = [Fault("kill-Decoder", lambda s: kill_replica("Decoder"), "SIGKILL Decoder replica")]
    ordered = sorted(encoders, key=lambda n: (n != "TextEncoder", ENCODER_DEPLOYMENTS.index(n)))
    faults += [
        Fault(f"kill-{name}", lambda s, n=name: kill_replica(n), f"SIGKILL {name} replica")
        for name in ordered
    ]
    hung = f"hung-{hung_encoder}-{HUNG_S:.0f}s"
    faults += [
        Fault(
            "kill-aggregator-cam1",
            lambda s: kill_aggregator("cam1"),
            "SIGKILL aggregator actor of cam1",
        ),
        Fault(
            "kill-Ingress",
            lambda s: kill_replica("Ingress"),
            "SIGKILL Ingress replica (its supervisors; the restarted one resumes the streams)",
        ),
        Fault(
            "kill-Publisher-backlog",
            lambda s: publisher_backlog(service=s),
            "SIGKILL Publisher replica holding a backlog (Redis writes paused)",
            check=check_backlog_delivered,
        ),
        Fault(
            f"redis-stopped-{REDIS_STOPPED_S:.0f}s",
            lambda s: stop_redis(REDIS_STOPPED_S, service=s),
            f"redis-server stopped {REDIS_STOPPED_S:.0f} s (no persistence)",
        ),
        Fault("redis-paused-10s", lambda s: pause_redis(10, service=s), "CLIENT PAUSE 10 s ALL"),
        Fault(
            f"source-gone-{SOURCE_GONE_S:.0f}s",
            lambda s: source_gone("cam1", SOURCE_GONE_S, service=s),
            f"cam1's TCP server gone {SOURCE_GONE_S:.0f} s, reconnect "
            f"{RECONNECT.initial_s}..{RECONNECT.max_s} s",
            check=check_reconnect_attempts,
        ),
        Fault(
            hung,
            lambda s: {"since_ms": now_ms(), "pids": pause_replica(hung_encoder, HUNG_S)},
            f"SIGSTOP {hung_encoder} replica {HUNG_S:.0f} s (call timeout {CALL_TIMEOUT_S:g} s)",
            check=lambda s, injected: check_timeout_path(s, injected["since_ms"]),
        ),
        Fault(
            "flapping-source-15s",
            lambda s: flap_source("cam1", 15, 1.0, service=s),
            "cam1 cut off every second for 15 s",
        ),
        Fault(
            "subscriber-schema-behind",
            lambda s: newer_producer(service=s),
            f"a newer producer's event type ({NEWER_EVENT_TYPE}) and an unreadable entry",
            check=check_newer_schema,
        ),
    ]
    return faults


@dataclass
class FaultResult:
    fault: str
    description: str
    recovered: bool = False
    recovery_s: float | None = None
    violations: Violations = field(default_factory=Violations)
    notes: list[str] = field(default_factory=list)
    injected: Any = None

    @property
    def survived(self) -> bool:
        return self.recovered and not self.violations

    def message(self) -> str:
        head = f"{self.fault} ({self.description}): " + (
            f"recovered in {self.recovery_s:.1f} s" if self.recovered else "did NOT recover"
        )
        lines = [head, *(f"  - {v}" for v in self.violations)]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def wait_recovered(
    service: ChaosService, after_ms: int, timeout: float, failed_grace_s: float = 12.0
) -> tuple[float | None, str]:
    """Seconds from ``after_ms`` until every stream is ``streaming`` (API) and published a
    window after it; None (and why) when not within ``timeout``. A stream that stays in a
    terminal state (failed, stopped) for ``failed_grace_s`` ends the wait early."""
    deadline = time.monotonic() + timeout
    terminal_since: dict[str, float] = {}
    views: dict[str, StreamView] = {}
    while True:
        views = {sid: service.view(sid) for sid in service.source_ids}
        if all(
            v.api_state == "streaming" and v.last_window_ms and v.last_window_ms > after_ms
            for v in views.values()
        ):
            return max(0.0, time.time() - after_ms / 1000), ""
        now = time.monotonic()
        for sid, v in views.items():
            if v.api_state in TERMINAL_STATES:
                terminal_since.setdefault(sid, now)
            else:
                terminal_since.pop(sid, None)
        stuck = [sid for sid, t in terminal_since.items() if now - t >= failed_grace_s]
        if stuck or now >= deadline:
            why = "; ".join(_describe_view(v) for v in views.values())
            if stuck:
                stayed = f"{', '.join(stuck)} stayed in a terminal state {failed_grace_s:.0f} s"
                why = f"{stayed}: {why}"
            else:
                why = f"not within {timeout:.0f} s: " + why
            return None, why
        time.sleep(0.5)


def run_fault(
    service: ChaosService,
    fault: Fault,
    *,
    recovery_timeout_s: float = 60.0,
    settle_s: float | None = None,
) -> FaultResult:
    """Healthy first (``ensure_healthy``), inject, wait for recovery, check the invariants
    over everything published from just before the fault."""
    result = FaultResult(fault.name, fault.description)
    try:
        result.notes += service.ensure_healthy()
    except RuntimeError as exc:  # an earlier fault broke the service beyond a stream reset
        result.violations.append(f"precondition: {exc}")
        return result
    service.baseline_aggregators = {
        sid: {a.name for a in aggregator_actors(sid)} for sid in service.source_ids
    }
    service.fault_ended_at = None
    since_ms = now_ms()
    try:
        result.injected = fault.inject(service)
    except FaultError as exc:
        result.violations.append(f"fault-injected: {exc}")
        return result
    ended_ms = now_ms()
    service.fault_ended_at = ended_ms / 1000
    recovery_s, why = wait_recovered(
        service, ended_ms, fault.recovery_timeout_s or recovery_timeout_s
    )
    result.recovered = recovery_s is not None
    result.recovery_s = recovery_s
    time.sleep(service.hop_s * 2 if settle_s is None else settle_s)  # closings, buffered records
    violations = check_invariants(service, since_ms)
    if fault.check is not None:
        try:
            violations.extend(fault.check(service, result.injected))
        except (redis.RedisError, httpx.HTTPError, FaultError) as exc:
            violations.append(f"check-failed: {fault.name}: {type(exc).__name__}: {exc}")
    if isinstance(result.injected, Mapping):
        shown = {k: v for k, v in result.injected.items() if k not in ("pids", "since_ms")}
        if shown:
            result.notes.append("injected: " + json.dumps(shown, default=str))
    if not result.recovered:
        violations.insert(0, f"recovered: the streams did not recover: {why}")
    result.violations = violations
    service.known_orphans |= violations.orphan_ids
    service.known_duplicates |= violations.duplicate_keys
    return result


def run_all(service: ChaosService, faults: Iterable[Fault], **kwargs: Any) -> Iterator[FaultResult]:
    for fault in faults:
        yield run_fault(service, fault, **kwargs)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]
