"""The bus: where windows, events and stream states leave the pipeline (contract §5).

``Publisher`` is the transport boundary (as Frigate's ``comms/base_communicator.py``); the
pipeline knows nothing else. ``RedisPublisher`` is the Redis transport:

- ``{p}:windows:{source}`` / ``{p}:events:{source}`` / ``{p}:events``: Streams, field ``json``,
  trimmed by ``MAXLEN ~`` (per stream, config) and, with ``retention_s``, by ``MINID`` (server
  time) on every publish and by a sweep of every stream each ``retention_sweep_s`` (so an
  idle source's streams, and dead letters, age out too); ``{p}:live:{source}``: Pub/Sub,
  the record JSON with ``"kind"`` (window, event, status) added; ``{p}:streams``: Hash,
  source -> JSON of its registration and latest state; ``{p}:event:{id}``: Hash, field
  ``json`` = latest version of that event (TTL ``event_ttl_s``).
- Idempotent: one Lua script per record sets ``{p}:seen:{kind}:{id}`` (NX, TTL
  ``dedupe_ttl_s``) and writes only when it was not set before, so retries, reconnects and
  re-runs never duplicate; the first publication (and its ``published_at``) wins. Live
  records (with ``wall_start``) are keyed ``{id}@{wall_start}``: their media time, and so
  their ids, start again at 0 in each new session.
- Events and their closing updates: the event engine sends an ongoing version when an event
  starts and a closing update (same id, ``ongoing=false``) when it ends. By default the Streams
  receive each event ONCE, in its final state; the ongoing version is announced on Pub/Sub and
  stored in the event hash only. With ``publish_open_events`` (by default for live records,
  whose subscribers must react at the start) the first version seen is the Stream entry and
  the closing update goes to Pub/Sub and the event hash only. Point events (no ongoing
  version) enter the Streams either way.
- Every version of every event (the ongoing one, the closing update, point events) also goes
  once to ``{p}:versions``, one stream for all sources: what sinks read, so a binary sensor
  turns on when a condition opens and off when it closes, whichever version the other
  streams keep.
- Outages: ``publish_*`` never block on Redis and never raise for it. Records queue in a
  bounded buffer that a background thread sends in pipelined batches; while Redis is
  unreachable the thread retries with exponential backoff, logs one line per outage (and one
  when it is back), and when the buffer is full the oldest windows are dropped (counted);
  events and states are never dropped, so only they can exceed the bound. ``flush`` waits
  for the buffer to drain; ``close`` flushes (up to ``close_timeout_s``) and stops the thread.
- A full Redis (``maxmemory`` reached, policy ``noeviction``: every write answers OOM) is
  such an outage, not a refusal of the records: one warning line names it, with maxmemory
  and used memory, ``oom`` counts such episodes and ``full`` is 1 until the records held
  meanwhile are all in (then one line says so); meanwhile the retention sweep (XTRIM frees
  memory and is allowed when full) and the keys' TTLs make room.
- Acknowledgement: every ``publish_*`` returns a sequence number and ``wait_delivered(seq)``
  returns once Redis has settled everything up to it, so a producer in another process can
  keep its records until then and hand them again to a new publisher if this one dies
  (idempotency makes the repeat harmless). The sender thread survives any error of its own
  (logged, retried after a backoff); ``healthy()`` is False only if it is gone.

Redis Cluster (``redis.cluster``): a script may only touch keys of one hash slot, so
``BusKeys`` hash-tags every key of a source with the source (``{p}:windows:{<source>}``,
``{p}:events:{<source>}``, ``{p}:event:{<source>}:<id>``, ``{p}:seen:{<source>}:...``) and an
event is published by two scripts: ``PUBLISH_SCRIPT`` in the source's slot (dedupe, its
streams, the event hash, Pub/Sub) and ``ALL_EVENTS_SCRIPT`` in the slot of ``{p}:events``
(its own dedupe key, tagged ``{<p>:events}``, then XADD). Each is idempotent on its own and
both are sent for every event, also when the first answers "seen before", so a crash
between the two is repaired by the retry. On one server, one script does both, and the key
names are those above, untagged.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import redis

from mmlm_stream.bus.redis_client import (
    RETRYABLE_ERRORS,
    RedisClient,
    RedisUnavailable,
    client_for,
    error_reason,
)
from mmlm_stream.bus.transport import Publisher, StateLike, StreamRegistry, _json_object, state_dict
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.records.schema import EventRecord, WindowRecord, utc_stamp
from mmlm_stream.util.backoff import Backoff
from mmlm_stream.util.errors import MmlmError
from mmlm_stream.util.redaction import redact_url

logger = logging.getLogger(__name__)

PUBLISH_SCRIPT = """
-- Publish one record version once. It touches only its KEYS, which on a Redis Cluster share
-- the source's slot; the live channel is no key (ARGV[3]).
-- KEYS[1] dedupe key of this version; then, when ARGV[6] is '1', the dedupe key of a later
-- version; then, when ARGV[7] is '1', the latest-version hash; then the streams.
-- ARGV[1] record JSON; ARGV[2] live JSON; ARGV[3] live channel; ARGV[4] dedupe TTL s;
-- ARGV[5] hash TTL s; ARGV[8] retention ms (0 = none); ARGV[9..] MAXLEN ~ of the streams
-- (0 = unbounded).
-- Returns 1: added to the streams, 2: announced only, 0: seen before (nothing written).
local later, hash, first = nil, nil, 2
if ARGV[6] == '1' then
  later = KEYS[first]
  first = first + 1
end
if ARGV[7] == '1' then
  hash = KEYS[first]
  first = first + 1
end
local function announce()
  if hash then
    redis.call('HSET', hash, 'json', ARGV[1])
    redis.call('EXPIRE', hash, ARGV[5])
  end
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[4]) then
  if later then
    redis.call('SET', later, '1', 'EX', ARGV[4])  -- this version is already the last one
  end
  if first > #KEYS then
    announce()
    return 2
  end
  local minid = nil
  if tonumber(ARGV[8]) > 0 then
    local now = redis.call('TIME')
    local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    minid = string.format('%.0f', ms - tonumber(ARGV[8]))
  end
  for i = first, #KEYS do
    local maxlen = ARGV[i - first + 9]
    if tonumber(maxlen) > 0 then
      redis.call('XADD', KEYS[i], 'MAXLEN', '~', maxlen, '*', 'json', ARGV[1])
    else
      redis.call('XADD', KEYS[i], '*', 'json', ARGV[1])
    end
    if minid then
      redis.call('XTRIM', KEYS[i], 'MINID', minid)
    end
  end
  announce()
  return 1
end
if later and redis.call('SET', later, '1', 'NX', 'EX', ARGV[4]) then
  announce()
  return 2
end
return 0
"""
PUBLISH_SHA = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()

ALL_EVENTS_SCRIPT = """
-- Add one event version to a stream once: to the stream of all events on a Redis Cluster, in
-- that stream's slot (PUBLISH_SCRIPT did the source's keys, in theirs), and to the stream of
-- every version (``versions``) everywhere.
-- KEYS[1] dedupe key, hash-tagged into the slot of KEYS[2], the stream.
-- ARGV[1] record JSON; ARGV[2] dedupe TTL s; ARGV[3] retention ms (0 = none); ARGV[4] MAXLEN ~
-- (0 = unbounded). Returns 1: added, 0: seen before (nothing written).
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return 0
end
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'json', ARGV[1])
else
  redis.call('XADD', KEYS[2], '*', 'json', ARGV[1])
end
if tonumber(ARGV[3]) > 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('XTRIM', KEYS[2], 'MINID', string.format('%.0f', ms - tonumber(ARGV[3])))
end
return 1
"""
ALL_EVENTS_SHA = hashlib.sha1(ALL_EVENTS_SCRIPT.encode()).hexdigest()

_Call = tuple[str, list[str], list[str | int]]
"""One script call: its SHA1, KEYS and ARGV."""


def hash_tag(source: str) -> str:
    """``{<source>}``: Redis Cluster hashes only what is between the first ``{`` and the next
    ``}``, so every key holding it lands in one slot. A source that has braces itself (or is
    empty) gets a tag of its digest, followed by the source to keep the key unique."""
    if source and "{" not in source and "}" not in source:
        return f"{{{source}}}"
    return f"{{#{hashlib.sha1(source.encode()).hexdigest()[:16]}}}{source}"


@dataclass(frozen=True)
class BusKeys:
    """Key and channel names under one prefix (contract §5).

    ``cluster``: a source's keys carry its hash tag (``hash_tag``) so they share a slot; the
    all-events stream, the registry, dead letters and live channels keep their names.
    """

    prefix: str = "mmlm"
    cluster: bool = False

    def _source(self, source: str | None) -> str:
        if source is None:
            raise ValueError("a Redis Cluster key needs the record's source")
        return hash_tag(source) if self.cluster else source

    def windows(self, source: str) -> str:
        return f"{self.prefix}:windows:{self._source(source)}"

    def events(self, source: str | None = None) -> str:
        """One source's events stream, or the stream of all events."""
        if source is None:
            return f"{self.prefix}:events"
        return f"{self.prefix}:events:{self._source(source)}"

    def live(self, source: str) -> str:
        """A Pub/Sub channel, not a key: the same name on a cluster (``*`` for a pattern)."""
        return f"{self.prefix}:live:{source}"

    @property
    def streams(self) -> str:
        return f"{self.prefix}:streams"

    @property
    def sweep_lock(self) -> str:
        """Taken by the publisher that sweeps this period (the others skip)."""
        return f"{self.prefix}:retention-sweep"

    def seen(self, kind: str, record_id: str, source: str | None = None) -> str:
        """Dedupe key of a record version; ``source`` is needed on a cluster only."""
        if self.cluster:
            return f"{self.prefix}:seen:{self._source(source)}:{kind}:{record_id}"
        return f"{self.prefix}:seen:{kind}:{record_id}"

    def seen_all(self, record_id: str) -> str:
        """Cluster: dedupe key of an event in the all-events stream, tagged into that stream's
        slot (a key without braces hashes whole, so ``{<prefix>:events}`` is its slot). On one
        server ``seen("event", ...)`` covers both streams."""
        return f"{self.prefix}:seen:{{{self.events()}}}:all:{record_id}"

    @property
    def versions(self) -> str:
        """The stream of every version of every event (opening, closing, point): what sinks
        read. On a cluster it is tagged into the slot of the all-events stream."""
        if self.cluster:
            return f"{self.prefix}:versions:{{{self.events()}}}"
        return f"{self.prefix}:versions"

    def seen_version(self, record_id: str) -> str:
        """Dedupe key of one version in ``versions`` (same slot on a cluster)."""
        return f"{self.prefix}:seen:{{{self.events()}}}:version:{record_id}"

    def event(self, event_id: str, source: str | None = None) -> str:
        """Latest-version hash of an event; ``source`` is needed on a cluster only."""
        if self.cluster:
            return f"{self.prefix}:event:{self._source(source)}:{event_id}"
        return f"{self.prefix}:event:{event_id}"

    def dead(self, group: str) -> str:
        """Dead letters of a consumer group: entries it could not read, with the reason."""
        return f"{self.prefix}:dead:{group}"

    def is_stream(self, key: str) -> bool:
        """Whether ``key`` is one of the bus's streams (what the retention sweep trims)."""
        p = self.prefix
        return key in (f"{p}:events", self.versions) or key.startswith(
            (f"{p}:windows:", f"{p}:events:", f"{p}:dead:")
        )


@dataclass(slots=True)
class _Item:
    seq: int
    kind: Literal["window", "event", "state"]
    source: str
    record: WindowRecord | EventRecord | None = None
    state: dict[str, Any] | None = None
    first: int | None = None  # the source script's answer, once one came (counted once)


_TRANSIENT_CODES = frozenset(
    {"OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY"}
)
_SCRIPT_ERROR_CODE = re.compile(r": -([A-Z]+) ")


def _reply_code(exc: BaseException) -> str:
    """The error code of a reply (``OOM``, ``BUSY``...). redis-py strips the code it knows
    from the message (``status_code`` keeps it); Redis before 7 wraps an error inside a
    script as ``ERR Error running script ...: -OOM ...``."""
    code = getattr(exc, "status_code", None)
    text = str(exc)
    if not code:
        code = text.split(" ", 1)[0]
    if code in {"ERR", "Error"}:
        inner = _SCRIPT_ERROR_CODE.search(text)
        if inner:
            code = inner.group(1)
    return str(code)


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or _reply_code(exc) == "OOM"


def _transient(exc: BaseException) -> bool:
    """Worth retrying later (server or cluster node away, loading, read-only replica,
    failover, out of memory)."""
    if isinstance(exc, (*RETRYABLE_ERRORS, redis.ReadOnlyError, redis.exceptions.OutOfMemoryError)):
        return True
    return isinstance(exc, redis.ResponseError) and _reply_code(exc) in _TRANSIENT_CODES


def _unreachable(exc: BaseException) -> bool:
    """Any Redis failure other than a command's own error reply (those are per record)."""
    if isinstance(exc, redis.exceptions.RedisClusterException):
        return True
    return isinstance(exc, redis.RedisError) and not isinstance(exc, redis.ResponseError)


def _describe(item: _Item) -> str:
    if isinstance(item.record, WindowRecord):
        return f"window {item.record.window_id}"
    if isinstance(item.record, EventRecord):
        return f"event {item.record.id}"
    return f"state of {item.source}"


def _client_url(client: RedisClient) -> str:
    if isinstance(client, redis.RedisCluster):
        node = client.get_default_node()
        return f"redis://{node.host}:{node.port} (cluster)" if node else "redis cluster"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    scheme = (
        "rediss" if "ssl" in client.connection_pool.connection_class.__name__.lower() else "redis"
    )
    return f"{scheme}://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _identity(record: WindowRecord | EventRecord) -> str:
    """What makes a record the same one again: its id, plus ``wall_start`` for live records.

    A live source's media time starts at 0 in every new process that watches it, so its ids
    repeat from one session to the next; the wall-clock start tells those apart, while a
    retry of the same record (same ``wall_start``) is still recognised.
    """
    rid = record.window_id if isinstance(record, WindowRecord) else record.id
    return f"{rid}@{record.wall_start}" if record.wall_start else rid


def _live_json(kind: str, record_json: str) -> str:
    """The record JSON with ``"kind"`` first, without parsing it again."""
    return f'{{"kind":"{kind}",{record_json[1:]}'


def _batched(names: list[str], size: int) -> Iterator[list[str]]:
    it = iter(names)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _server_ms(client: RedisClient) -> int:
    """Redis's clock in ms (stream ids come from it, so retention must too)."""
    reply: Any = client.time()
    if isinstance(reply, dict):  # a cluster may answer per node
        reply = next(iter(reply.values()))
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def _memory_note(client: RedisClient) -> str:
    """``maxmemory 3.00G, used 3.00G, policy noeviction`` from INFO (best effort: INFO is
    allowed when Redis is full, but may be renamed or denied)."""
    try:
        info: Any = client.info("memory")
    except Exception:
        return "maxmemory unknown"
    if isinstance(info, dict) and "maxmemory" not in info:  # a cluster answers per node
        nodes = [v for v in info.values() if isinstance(v, dict) and v.get("maxmemory")]
        if not nodes:
            return "maxmemory unknown"
        info = max(nodes, key=lambda v: int(v["used_memory"]) / int(v["maxmemory"]))
    if not isinstance(info, dict) or "maxmemory_human" not in info:
        return "maxmemory unknown"
    return (
        f"maxmemory {info['maxmemory_human']}, used {info.get('used_memory_human', '?')}, "
        f"policy {info.get('maxmemory_policy', '?')}"
    )


class RedisPublisher(Publisher, StreamRegistry):
    """The Redis transport (module docstring). Thread-safe; one background sender thread.

    Metrics, as attributes: ``published`` (versions added to the streams), ``announced``
    (versions sent to Pub/Sub and the event hash only, and states), ``duplicates`` (versions
    Redis had already seen), ``errors`` (failed attempts, including each retry), ``rejected``
    (records Redis refused for good, e.g. a key of the wrong type), ``dropped`` (windows
    dropped from a full buffer), ``outages`` (episodes of Redis not taking records, whatever
    the cause), ``oom`` (those episodes where Redis was out of memory), ``full`` (1 from then
    until what it held is in), ``trimmed`` (entries the retention sweep removed),
    ``buffered`` (records waiting now).

    A cluster client (``redis.RedisCluster``) or ``config.cluster`` selects the cluster keys
    and scripts; with a URL, the cluster client is made on first use, so a cluster that is
    down at start is an outage like any other, not an error of the constructor.
    """

    METRICS = (
        "published",
        "announced",
        "duplicates",
        "errors",
        "rejected",
        "dropped",
        "outages",
        "oom",
        "full",
        "trimmed",
        "buffered",
    )

    def __init__(self, redis_or_url: RedisClient | str, config: RedisConfig | None = None) -> None:
        self.config = config or RedisConfig()
        self._owns_client = isinstance(redis_or_url, str)
        self._client: RedisClient | None = None
        self._client_lock = threading.Lock()
        if isinstance(redis_or_url, str):
            self._url = redis_or_url
            self.url = redact_url(redis_or_url)
            cluster = self.config.cluster
            if not cluster:
                self._client = client_for(redis_or_url, self.config)
            elif urlsplit(redis_or_url).scheme not in ("redis", "rediss"):
                raise RedisUnavailable(f"{self.url}: a Redis Cluster needs a redis:// URL")
        else:
            self._url = ""
            self._client = redis_or_url
            self.url = _client_url(redis_or_url)
            cluster = self.config.cluster or isinstance(redis_or_url, redis.RedisCluster)
        self.keys = BusKeys(self.config.prefix, cluster=cluster)
        self.published = self.announced = self.duplicates = 0
        self.errors = self.rejected = self.dropped = self.outages = 0
        self.oom = self.trimmed = 0
        self._full = False
        self._cond = threading.Condition()
        self._windows: deque[_Item] = deque()
        self._others: deque[_Item] = deque()
        self._batch: list[_Item] = []  # taken by the sender, not yet settled
        self._seq = 0
        self._closed = False
        self._abort = False
        self._kick = False
        self._outage_since: float | None = None
        self._dropping = False
        self._backoff = Backoff(
            initial=self.config.retry_initial_s, maximum=self.config.retry_max_s
        )
        self._thread = threading.Thread(target=self._run, name="redis-publisher", daemon=True)
        self._thread.start()
        self._sweep_stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        if self.config.retention_s:
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="redis-retention", daemon=True
            )
            self._sweeper.start()

    @property
    def client(self) -> RedisClient:
        """The Redis client; a cluster client is made here on first use. Raises
        ``redis.ConnectionError`` while no cluster node answers."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    try:
                        self._client = client_for(self._url, self.config)
                    except RedisUnavailable as exc:
                        reason = str(exc).removeprefix(f"{self.url}: ")
                        raise redis.ConnectionError(reason) from None
        return self._client

    # -- metrics -------------------------------------------------------------------------------

    @property
    def full(self) -> int:
        """1 from Redis's first out-of-memory answer until the records held since are all in."""
        return int(self._full)

    @property
    def buffered(self) -> int:
        with self._cond:
            return len(self._windows) + len(self._others) + len(self._batch)

    def metrics(self) -> dict[str, int]:
        """All counters at one instant (for /metrics)."""
        with self._cond:
            return {name: getattr(self, name) for name in self.METRICS}

    # -- the Publisher interface ---------------------------------------------------------------

    def publish_window(self, record: WindowRecord) -> int:
        return self._put("window", record.source, record=record)

    def publish_event(self, record: EventRecord) -> int:
        return self._put("event", record.source, record=record)

    def set_stream_state(self, source: str, state: StateLike) -> int:
        return self._put("state", source, state=state_dict(state))

    def register_stream(self, source: str, info: Mapping[str, Any] | str) -> None:
        """Synchronous (the caller, e.g. ``POST /streams``, must know); raises
        ``RedisUnavailable`` when Redis cannot be reached."""
        fields = _json_object(info)
        stamp = utc_stamp()

        def update(current: dict[str, Any] | None) -> dict[str, Any]:
            entry = {**fields, "source": source, "registered_at": stamp}
            entry["state"] = (current or {}).get("state")
            return entry

        self._sync(lambda: self._update_stream(source, update))

    def unregister_stream(self, source: str) -> None:
        self._sync(lambda: self.client.hdel(self.keys.streams, source))

    def streams(self) -> dict[str, dict[str, Any]]:
        raw = self._sync(lambda: self.client.hgetall(self.keys.streams))
        return {_text(k): json.loads(v) for k, v in sorted(raw.items())}

    def open_events(self, source: str, scan: int = 1000) -> list[EventRecord]:
        entries = self._sync(lambda: self.client.xrevrange(self.keys.events(source), count=scan))
        found: dict[str, EventRecord] = {}
        for _, fields in entries:
            try:
                event = EventRecord.read_json(fields[b"json"])
            except (KeyError, ValueError):
                continue
            if event.ongoing and event.id not in found:
                found[event.id] = event
        still_open = []
        for event in found.values():
            raw = self._sync(
                lambda e=event: self.client.hget(self.keys.event(e.id, source), "json")
            )
            latest = EventRecord.read_json(raw) if raw else event
            if latest.ongoing and latest.wall_start == event.wall_start:
                still_open.append(latest)
        return still_open

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the buffer to drain. A sender waiting out a backoff retries at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._kick = True
            self._cond.notify_all()
            while self._windows or self._others or self._batch:
                if not self._thread.is_alive():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 0.5)
            return True

    def delivered_through(self) -> int:
        """The highest sequence number up to which every record is settled (sent, seen
        before, rejected for good, or dropped by the buffer policy)."""
        with self._cond:
            return self._delivered_through()

    def _delivered_through(self) -> int:
        heads = [queue[0].seq for queue in (self._windows, self._others) if queue]
        if self._batch:
            heads.append(self._batch[0].seq)
        return min(heads) - 1 if heads else self._seq

    def wait_delivered(self, seq: int, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._delivered_through() < seq:
                if not self._thread.is_alive():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(min(left, 0.5) if left is not None else 0.5)
            return True

    def healthy(self) -> bool:
        return self._thread.is_alive() or self._closed

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout`` (default ``close_timeout_s``), then stop; whatever is
        still held is lost, with one warning line."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        delivered = self.flush(self.config.close_timeout_s if timeout is None else timeout)
        with self._cond:
            self._abort = True
            self._cond.notify_all()
        self._sweep_stop.set()
        self._thread.join(timeout=self.config.socket_timeout_s + 1)
        if self._sweeper is not None:
            self._sweeper.join(timeout=self.config.socket_timeout_s + 1)
        if not delivered:
            logger.warning(
                "redis bus: %s: closed with %d records undelivered", self.url, self.buffered
            )
        if self._owns_client and self._client is not None:
            self._client.close()

    # -- buffer --------------------------------------------------------------------------------

    def _put(self, kind: Literal["window", "event", "state"], source: str, **payload: Any) -> int:
        with self._cond:
            if self._closed:
                raise RuntimeError("publisher is closed")
            self._seq += 1
            item = _Item(self._seq, kind, source, **payload)
            (self._windows if kind == "window" else self._others).append(item)
            excess = len(self._windows) + len(self._others) + len(self._batch)
            excess -= self.config.buffer_size
            while excess > 0 and self._windows:
                self._windows.popleft()
                self.dropped += 1
                excess -= 1
                if not self._dropping:
                    self._dropping = True
                    logger.warning(
                        "redis bus: %s: buffer full (%d records); dropping the oldest windows",
                        self.url,
                        self.config.buffer_size,
                    )
            self._cond.notify_all()
            return item.seq

    def _take(self, limit: int) -> list[_Item]:
        """Up to ``limit`` items in publication order (the two queues merged by seq); they
        stay in ``_batch`` until settled, so the delivery watermark and a failed cycle
        always know what is still unsent."""
        windows, others = self._windows, self._others
        while len(self._batch) < limit and (windows or others):
            if others and (not windows or others[0].seq < windows[0].seq):
                self._batch.append(others.popleft())
            else:
                self._batch.append(windows.popleft())
        return self._batch

    def _requeue_batch(self) -> None:
        for item in reversed(self._batch):
            (self._windows if item.kind == "window" else self._others).appendleft(item)
        self._batch.clear()

    def _settle(self, count: int) -> None:
        """The first ``count`` items of the batch are done (sent, seen before or rejected)."""
        with self._cond:
            del self._batch[:count]
            self._cond.notify_all()

    # -- sender thread -------------------------------------------------------------------------

    def _run(self) -> None:
        """Send until closed. No error may end this thread: one that escapes the per-batch
        handling (a bug, a broken record) is logged and retried after a backoff; what was
        not sent stays queued."""
        while True:
            try:
                if not self._cycle():
                    return
            except Exception:
                logger.exception("redis bus: %s: sender error; retrying", self.url)
                with self._cond:
                    self.errors += 1
                if not self._wait_backoff():
                    return
            finally:
                with self._cond:
                    self._requeue_batch()
                    self._cond.notify_all()

    def _cycle(self) -> bool:
        """Send one batch; False when the publisher is closing."""
        with self._cond:
            while not (self._windows or self._others) and not self._abort:
                self._cond.wait()
            if self._abort:
                return False
            batch = self._take(self.config.batch_size)
        try:
            self._send(batch)
        except Exception as exc:
            if not _transient(exc) and not _unreachable(exc):
                self._reject(batch, exc)
                return True
            self._failed(exc)  # one line per outage; every record stays
            with self._cond:
                self._requeue_batch()
            return self._wait_backoff()
        self._recovered()
        return True

    def _reject(self, remaining: list[_Item], exc: Exception) -> None:
        """A lasting error at the first unsent item (e.g. a registry key of the wrong type):
        drop that item, keep the rest."""
        logger.warning("redis bus: %s: %s rejected: %s", self.url, _describe(remaining[0]), exc)
        with self._cond:
            self.rejected += 1
            self.errors += 1
        self._settle(1)

    def _failed(self, exc: Exception) -> None:
        """Count a failed attempt; one line when an outage starts, and one when Redis turns
        out to be full (the cause an operator must act on: memory, retention)."""
        full = _out_of_memory(exc)
        with self._cond:
            self.errors += 1
            starts = self._outage_since is None
            if starts:
                self._outage_since = time.monotonic()
                self.outages += 1
            fills = full and not self._full
            if fills:
                self._full = True
                self.oom += 1
            held = len(self._windows) + len(self._others) + len(self._batch)
        if fills:
            logger.warning(
                "redis bus: %s: Redis is out of memory (%s): holding %d records; windows are "
                "dropped beyond buffer_size (%d), events and states are kept",
                self.url,
                _memory_note(self.client),
                held,
                self.config.buffer_size,
            )
        elif starts:
            logger.warning(
                "redis bus: %s: %s; holding %d records and retrying",
                self.url,
                error_reason(exc),
                held,
            )

    def _wait_backoff(self) -> bool:
        delay = self._backoff.next_delay()
        with self._cond:
            self._cond.wait_for(lambda: self._abort or self._kick, timeout=delay)
            self._kick = False
            return not self._abort

    def _recovered(self) -> None:
        """A batch went through. An outage ends here; a full Redis only once the records held
        meanwhile are all in: at the edge of maxmemory a write gets through now and then (a
        freed buffer, an expired key), which is no end of the episode worth two lines."""
        self._backoff.reset()
        with self._cond:
            if self._outage_since is None:
                return
            if self._full and (self._windows or self._others):
                return
            down = time.monotonic() - self._outage_since
            self._outage_since = None
            self._dropping = False
            was_full, self._full = self._full, False
            dropped = self.dropped
        logger.warning(
            "redis bus: %s: %s after %.1fs (%d windows dropped so far)",
            self.url,
            "takes writes again" if was_full else "reachable again",
            down,
            dropped,
        )

    def _send(self, batch: list[_Item]) -> None:
        """Send in order; completed items leave ``batch`` (what is left is retried)."""
        stamp = utc_stamp()
        while batch:
            if batch[0].kind == "state":
                self._send_state(batch[0], stamp)
                self._settle(1)
                continue
            run = 0
            while run < len(batch) and batch[run].kind != "state":
                run += 1
            items = batch[:run]
            calls = [
                (index, call)
                for index, item in enumerate(items)
                for call in self._script_calls(item, stamp)
            ]
            # A cluster pipeline refuses .evalsha() but routes EVALSHA by its keys.
            pipe = self.client.pipeline(transaction=False)
            for _, (sha, keys, args) in calls:
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            answers = pipe.execute(raise_on_error=False)
            grouped: list[list[Any]] = [[] for _ in items]
            for (index, _), answer in zip(calls, answers, strict=True):
                grouped[index].append(answer)
            done, error = self._tally(items, grouped)
            self._settle(done)
            if error is not None:
                raise error
            if done < run:
                self._load_scripts()

    def _load_scripts(self) -> None:
        """After NOSCRIPT (a restarted server, SCRIPT FLUSH, a new cluster primary): a
        cluster client loads them on every primary."""
        self.client.script_load(PUBLISH_SCRIPT)
        self.client.script_load(ALL_EVENTS_SCRIPT)

    def _tally(self, items: list[_Item], answers: list[list[Any]]) -> tuple[int, Exception | None]:
        """Count the answers (one per script call of each item) up to the first missing
        script (NOSCRIPT: load it and go on) or transient error (retry): how many items are
        settled, and that error. An item is settled when all its calls succeeded; the source
        script's first answer is what counts it, so a retry of an item whose all-events call
        failed does not count it as a duplicate."""
        for item, replies in zip(items, answers, strict=True):
            if item.first is None and not isinstance(replies[0], Exception):
                item.first = int(replies[0])
        for index, (item, replies) in enumerate(zip(items, answers, strict=True)):
            errors = [reply for reply in replies if isinstance(reply, Exception)]
            if any(isinstance(error, redis.exceptions.NoScriptError) for error in errors):
                return index, None
            retry = next((error for error in errors if _transient(error)), None)
            if retry is not None:
                return index, retry
            if errors:
                logger.warning(
                    "redis bus: %s: %s rejected: %s", self.url, _describe(item), errors[0]
                )
                with self._cond:
                    self.rejected += 1
                    self.errors += 1
                continue
            with self._cond:
                if item.first == 1:
                    self.published += 1
                elif item.first == 2:
                    self.announced += 1
                else:
                    self.duplicates += 1
        return len(items), None

    def _script_calls(self, item: _Item, stamp: str) -> list[_Call]:
        """The script calls that publish one record (module docstring's rules): the source's
        script first, then, for an event that enters the streams on a cluster, the
        all-events script."""
        k, cfg = self.keys, self.config
        record = item.record
        assert isinstance(record, WindowRecord | EventRecord)
        source = record.source
        data = record.model_copy(update={"published_at": stamp}).to_json()
        retention = round(cfg.retention_s * 1000) if cfg.retention_s else 0
        ident = _identity(record)

        def own(
            kind: str, seen: str, later: str | None, latest: str | None, streams: dict[str, int]
        ) -> _Call:
            keys = [seen, *([later] if later else []), *([latest] if latest else []), *streams]
            args: list[str | int] = [data, _live_json(kind, data), k.live(source)]
            args += [cfg.dedupe_ttl_s, cfg.event_ttl_s, int(bool(later)), int(bool(latest))]
            return PUBLISH_SHA, keys, [*args, retention, *streams.values()]

        if isinstance(record, WindowRecord):
            seen = k.seen("window", ident, source)
            return [own("window", seen, None, None, {k.windows(source): cfg.windows_maxlen})]
        latest = k.event(record.id, source)
        version: _Call = (
            ALL_EVENTS_SHA,
            [k.seen_version(f"{ident}:{'open' if record.ongoing else 'final'}"), k.versions],
            [data, cfg.dedupe_ttl_s, retention, cfg.all_events_maxlen],
        )
        return [*self._event_calls(record, own, latest, ident, data, retention), version]

    def _event_calls(
        self,
        record: EventRecord,
        own: Callable[..., _Call],
        latest: str,
        ident: str,
        data: str,
        retention: int,
    ) -> list[_Call]:
        """The calls that put an event version in the source's keys and the two event streams."""
        k, cfg = self.keys, self.config
        source = record.source
        open_first = cfg.publish_open_events
        if open_first is None:
            open_first = record.wall_start is not None  # a live source's event
        if not open_first and record.ongoing:
            return [own("event", k.seen("event-open", ident, source), None, latest, {})]
        later = k.seen("event-close", ident, source) if open_first and not record.ongoing else None
        streams = {k.events(source): cfg.events_maxlen}
        if not k.cluster:
            streams[k.events()] = cfg.all_events_maxlen
            return [own("event", k.seen("event", ident, source), later, latest, streams)]
        everything: _Call = (
            ALL_EVENTS_SHA,
            [k.seen_all(ident), k.events()],
            [data, cfg.dedupe_ttl_s, retention, cfg.all_events_maxlen],
        )
        return [own("event", k.seen("event", ident, source), later, latest, streams), everything]

    def _send_state(self, item: _Item, stamp: str) -> None:
        state = item.state or {}

        def update(current: dict[str, Any] | None) -> dict[str, Any]:
            entry = dict(current or {"source": item.source})
            entry["state"] = {**state, "updated_at": stamp}
            return entry

        message = {"kind": "status", "source": item.source, **state, "published_at": stamp}
        self._update_stream(item.source, update, announce=json.dumps(message))
        with self._cond:
            self.announced += 1

    def _update_stream(
        self,
        source: str,
        update: Callable[[dict[str, Any] | None], dict[str, Any]],
        announce: str | None = None,
    ) -> None:
        """Read-modify-write of one registry entry (WATCH/MULTI), plus its live message.

        On a cluster the transaction holds the one registry key (a cluster pipeline needs
        ``transaction=True`` for WATCH) and the message follows it: PUBLISH has no key, so
        it cannot be part of a cluster transaction."""
        key = self.keys.streams
        cluster = self.keys.cluster
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, source)
                    entry = update(json.loads(raw) if raw else None)
                    pipe.multi()
                    pipe.hset(key, source, json.dumps(entry))
                    if announce is not None and not cluster:
                        pipe.publish(self.keys.live(source), announce)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        if announce is not None and cluster:
            self.client.publish(self.keys.live(source), announce)

    def _sync(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise RedisUnavailable(f"{self.url}: {error_reason(exc)}") from None

    # -- retention sweep -----------------------------------------------------------------------

    def sweep(self) -> int:
        """Trim every stream of the bus (windows and events of every source, idle ones too,
        the all-events stream, dead letters) to entries younger than ``retention_s`` by
        Redis's clock; returns how many entries it removed. Exact ``MINID``: the ``~`` form
        removes only whole nodes and at most 10,000 entries a call. Raises what Redis
        raises; the sweeper thread retries."""
        retention = self.config.retention_s
        if not retention:
            return 0
        client = self.client
        minid = str(max(0, _server_ms(client) - round(retention * 1000)))
        names = [
            name
            for name in map(_text, client.scan_iter(f"{self.keys.prefix}:*", 1000, "stream"))
            if self.keys.is_stream(name)
        ]
        removed = 0
        for chunk in _batched(sorted(set(names)), 256):
            pipe = client.pipeline(transaction=False)
            for name in chunk:
                pipe.xtrim(name, minid=minid, approximate=False)
            for reply in pipe.execute(raise_on_error=False):
                if isinstance(reply, Exception):
                    if _transient(reply):
                        raise reply
                    continue  # e.g. the key is no stream any more: nothing to trim
                removed += int(reply)
        with self._cond:
            self.trimmed += removed
        return removed

    def _sweep_due(self) -> bool:
        """Whether this publisher sweeps this period: the first to take the lock (it expires
        before the next period). A full Redis refuses the lock; then sweep anyway, freeing
        memory is what it needs most."""
        ttl_ms = max(1, int(self.config.retention_sweep_s * 900))
        try:
            return bool(
                self.client.set(self.keys.sweep_lock, secrets.token_hex(8), nx=True, px=ttl_ms)
            )
        except redis.exceptions.OutOfMemoryError:
            return True

    def _sweep_loop(self) -> None:
        """Sweep at once, then every ``retention_sweep_s`` until closed. Never raises: a
        failure delays the next try (backoff, at most a period) and logs one line, unless
        Redis is unreachable, which the sender already reports."""
        period = self.config.retention_sweep_s
        backoff = Backoff(initial=min(self.config.retry_initial_s, period), maximum=period)
        delay, failing, warned = 0.0, False, False
        while not self._sweep_stop.wait(delay):
            try:
                if self._sweep_due():
                    self.sweep()
            except Exception as exc:
                delay = backoff.next_delay()
                if not failing and not _unreachable(exc):
                    warned = True
                    logger.warning(
                        "redis bus: %s: retention sweep failed (%s); retrying",
                        self.url,
                        error_reason(exc),
                        exc_info=not isinstance(exc, redis.RedisError),
                    )
                failing = True
                continue
            if warned:
                logger.warning("redis bus: %s: retention sweep works again", self.url)
            backoff.reset()
            delay, failing, warned = period, False, False


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class RepublishResult:
    sources: list[str]
    windows: int
    events: int


def _read_records(path: Path, model: type[WindowRecord | EventRecord]) -> list[Any]:
    return [
        model.read_json(line)
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def republish(
    out_dir: Path, source: str | None, publisher: Publisher, *, timeout: float = 60.0
) -> RepublishResult:
    """Publish the finished ``<source>.windows.jsonl``/``.events.jsonl`` files of ``out_dir``
    (one source, or all when ``source`` is None) again; idempotency makes a repeat add nothing.

    Flushes every few hundred records, so a large file neither overflows the buffer (which
    would drop windows) nor outruns a slow server; raises ``MmlmError`` when Redis does not
    take them within ``timeout`` seconds of a flush.
    """
    out_dir = Path(out_dir)
    if source is None:
        sources = sorted(
            p.name.removesuffix(".windows.jsonl") for p in out_dir.glob("*.windows.jsonl")
        )
    else:
        if not (out_dir / f"{source}.windows.jsonl").exists():
            raise MmlmError(f"{out_dir / source}.windows.jsonl: no such output (describe it first)")
        sources = [source]
    result = RepublishResult(sources, 0, 0)
    config = getattr(publisher, "config", None)
    step = max(1, min(1024, (config.buffer_size // 2) if isinstance(config, RedisConfig) else 1024))

    def flush() -> None:
        if not publisher.flush(timeout):
            raise MmlmError(f"republish: Redis did not take the records within {timeout:.0f}s")

    pending = 0
    for name in sources:
        windows = _read_records(out_dir / f"{name}.windows.jsonl", WindowRecord)
        events_path = out_dir / f"{name}.events.jsonl"
        events = _read_records(events_path, EventRecord) if events_path.exists() else []
        for record in [*windows, *events]:
            if isinstance(record, WindowRecord):
                publisher.publish_window(record)
                result.windows += 1
            else:
                publisher.publish_event(record)
                result.events += 1
            pending += 1
            if pending >= step:
                flush()
                pending = 0
    flush()
    return result
