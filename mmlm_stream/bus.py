"""The bus: where windows, events and stream states leave the pipeline (SPEC section 5).

``Publisher`` is the transport boundary (as Frigate's ``comms/base_communicator.py``); the
pipeline knows nothing else. ``RedisPublisher`` is the Redis transport:

- ``{p}:windows:{source}`` / ``{p}:events:{source}`` / ``{p}:events``: Streams, field ``json``,
  trimmed by ``MAXLEN ~`` (per stream, config) and, with ``retention_s``, by ``MINID`` (server
  time); ``{p}:live:{source}``: Pub/Sub, the record JSON with ``"kind"`` (window, event,
  status) added; ``{p}:streams``: Hash, source -> JSON of its registration and latest state;
  ``{p}:event:{id}``: Hash, field ``json`` = latest version of that event (TTL ``event_ttl_s``).
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
- Outages: ``publish_*`` never block on Redis and never raise for it. Records queue in a
  bounded buffer that a background thread sends in pipelined batches; while Redis is
  unreachable the thread retries with exponential backoff, logs one line per outage (and one
  when it is back), and when the buffer is full the oldest windows are dropped (counted);
  events and states are never dropped, so only they can exceed the bound. ``flush`` waits
  for the buffer to drain; ``close`` flushes (up to ``close_timeout_s``) and stops the thread.
- Acknowledgement: every ``publish_*`` returns a sequence number and ``wait_delivered(seq)``
  returns once Redis has settled everything up to it, so a producer in another process can
  keep its records until then and hand them again to a new publisher if this one dies
  (idempotency makes the repeat harmless). The sender thread survives any error of its own
  (logged, retried after a backoff); ``healthy()`` is False only if it is gone.

The scripts touch keys of several hash slots: the bus targets one Redis server (or a
primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import redis

from mmlm_stream.backoff import Backoff
from mmlm_stream.bus_config import RedisConfig
from mmlm_stream.channels import StreamStatus
from mmlm_stream.errors import MmlmError
from mmlm_stream.records import EventRecord, WindowRecord, utc_stamp
from mmlm_stream.redis_server import RedisUnavailable, client_for, error_reason, redact

logger = logging.getLogger(__name__)

StateLike = StreamStatus | Mapping[str, Any] | str

PUBLISH_SCRIPT = """
-- Publish one record version once.
-- KEYS[1] dedupe key of this version; KEYS[2] dedupe key of a later version ('' = none);
-- KEYS[3] live channel; KEYS[4] latest-version hash ('' = none); KEYS[5..] streams.
-- ARGV[1] record JSON; ARGV[2] live JSON; ARGV[3] dedupe TTL s; ARGV[4] hash TTL s;
-- ARGV[5] retention ms (0 = none); ARGV[6..] MAXLEN ~ of KEYS[5..] (0 = unbounded).
-- Returns 1: added to the streams, 2: announced only, 0: seen before (nothing written).
local function announce()
  if KEYS[4] ~= '' then
    redis.call('HSET', KEYS[4], 'json', ARGV[1])
    redis.call('EXPIRE', KEYS[4], ARGV[4])
  end
  redis.call('PUBLISH', KEYS[3], ARGV[2])
end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  if KEYS[2] ~= '' then
    redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])  -- this version is already the last one
  end
  if #KEYS < 5 then
    announce()
    return 2
  end
  local minid = nil
  if tonumber(ARGV[5]) > 0 then
    local now = redis.call('TIME')
    local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    minid = string.format('%.0f', ms - tonumber(ARGV[5]))
  end
  for i = 5, #KEYS do
    if tonumber(ARGV[i + 1]) > 0 then
      redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[i + 1], '*', 'json', ARGV[1])
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
if KEYS[2] ~= '' and redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  announce()
  return 2
end
return 0
"""
PUBLISH_SHA = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()


@dataclass(frozen=True)
class BusKeys:
    """Key and channel names under one prefix (SPEC section 5)."""

    prefix: str = "mmlm"

    def windows(self, source: str) -> str:
        return f"{self.prefix}:windows:{source}"

    def events(self, source: str | None = None) -> str:
        """One source's events stream, or the stream of all events."""
        return f"{self.prefix}:events" if source is None else f"{self.prefix}:events:{source}"

    def live(self, source: str) -> str:
        return f"{self.prefix}:live:{source}"

    @property
    def streams(self) -> str:
        return f"{self.prefix}:streams"

    def seen(self, kind: str, record_id: str) -> str:
        return f"{self.prefix}:seen:{kind}:{record_id}"

    def event(self, event_id: str) -> str:
        return f"{self.prefix}:event:{event_id}"

    def dead(self, group: str) -> str:
        """Dead letters of a consumer group: entries it could not read, with the reason."""
        return f"{self.prefix}:dead:{group}"


def _json_object(value: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(value, str):
        loaded = json.loads(value)
        if not isinstance(loaded, dict):
            raise ValueError("expected a JSON object")
        return loaded
    return dict(value)


def state_dict(state: StateLike) -> dict[str, Any]:
    """A stream state as a JSON object; a ``StreamStatus`` from the decoder becomes
    ``{"state", "time", "wall", "attempt", "reason"?}``."""
    if isinstance(state, StreamStatus):
        out: dict[str, Any] = {
            "state": state.state.value,
            "time": state.time,
            "wall": utc_stamp(state.wall),
            "attempt": state.attempt,
        }
        if state.reason:
            out["reason"] = state.reason
        return out
    return _json_object(state)


class Publisher(ABC):
    """What the pipeline hands to whatever carries its output; swap the transport, not callers."""

    @abstractmethod
    def publish_window(self, record: WindowRecord) -> int:
        """Hand over a window; never blocks on the transport. Returns its sequence number."""

    @abstractmethod
    def publish_event(self, record: EventRecord) -> int:
        """Hand over an event version (ongoing or closing); never blocks on the transport."""

    @abstractmethod
    def set_stream_state(self, source: str, state: StateLike) -> int:
        """Record a live stream's state and announce it (kind ``status``)."""

    @abstractmethod
    def register_stream(self, source: str, info: Mapping[str, Any] | str) -> None:
        """Add (or update) a live stream in the registry; keeps its last state."""

    @abstractmethod
    def unregister_stream(self, source: str) -> None:
        """Remove a live stream from the registry."""

    @abstractmethod
    def streams(self) -> dict[str, dict[str, Any]]:
        """Registered streams: source -> registration info plus ``state``."""

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over has been delivered; False on timeout."""
        return True

    def wait_delivered(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until everything up to sequence number ``seq`` was delivered (or given up
        by a documented policy); False on timeout."""
        return self.flush(timeout)

    def healthy(self) -> bool:
        """Whether records handed over can still reach the transport (for /healthz)."""
        return True

    @abstractmethod
    def close(self) -> None:
        """Deliver what is held (within the transport's limit) and release resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class NullPublisher(Publisher):
    """Publishes nothing: for runs without a bus, so callers need no ``if publisher``."""

    def publish_window(self, record: WindowRecord) -> int:
        return 0

    def publish_event(self, record: EventRecord) -> int:
        return 0

    def set_stream_state(self, source: str, state: StateLike) -> int:
        return 0

    def register_stream(self, source: str, info: Mapping[str, Any] | str) -> None:
        pass

    def unregister_stream(self, source: str) -> None:
        pass

    def streams(self) -> dict[str, dict[str, Any]]:
        return {}

    def close(self) -> None:
        pass


@dataclass(slots=True)
class _Item:
    seq: int
    kind: Literal["window", "event", "state"]
    source: str
    record: WindowRecord | EventRecord | None = None
    state: dict[str, Any] | None = None


def _transient(exc: BaseException) -> bool:
    """Worth retrying later (server away, loading, read-only replica, out of memory)."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.ReadOnlyError):
        return True
    if isinstance(exc, redis.ResponseError):
        return str(exc).split(" ", 1)[0] in {"OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN"}
    return False


def _unreachable(exc: BaseException) -> bool:
    """Any Redis failure other than a command's own error reply (those are per record)."""
    return isinstance(exc, redis.RedisError) and not isinstance(exc, redis.ResponseError)


def _describe(item: _Item) -> str:
    if isinstance(item.record, WindowRecord):
        return f"window {item.record.window_id}"
    if isinstance(item.record, EventRecord):
        return f"event {item.record.id}"
    return f"state of {item.source}"


def _client_url(client: redis.Redis) -> str:
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


class RedisPublisher(Publisher):
    """The Redis transport (module docstring). Thread-safe; one background sender thread.

    Metrics, as attributes: ``published`` (versions added to the streams), ``announced``
    (versions sent to Pub/Sub and the event hash only, and states), ``duplicates`` (versions
    Redis had already seen), ``errors`` (failed attempts, including each retry), ``rejected``
    (records Redis refused for good, e.g. a key of the wrong type), ``dropped`` (windows
    dropped from a full buffer), ``outages``, ``buffered`` (records waiting now).
    """

    METRICS = (
        "published",
        "announced",
        "duplicates",
        "errors",
        "rejected",
        "dropped",
        "outages",
        "buffered",
    )

    def __init__(self, redis_or_url: redis.Redis | str, config: RedisConfig | None = None) -> None:
        self.config = config or RedisConfig()
        self._owns_client = isinstance(redis_or_url, str)
        if isinstance(redis_or_url, str):
            self.client = client_for(redis_or_url, self.config)
            self.url = redact(redis_or_url)
        else:
            self.client = redis_or_url
            self.url = _client_url(redis_or_url)
        self.keys = BusKeys(self.config.prefix)
        self.published = self.announced = self.duplicates = 0
        self.errors = self.rejected = self.dropped = self.outages = 0
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

    # -- metrics -------------------------------------------------------------------------------

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
        self._thread.join(timeout=self.config.socket_timeout_s + 1)
        if not delivered:
            logger.warning(
                "redis bus: %s: closed with %d records undelivered", self.url, self.buffered
            )
        if self._owns_client:
            self.client.close()

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
        with self._cond:
            self.errors += 1
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                self.outages += 1
                held = len(self._windows) + len(self._others) + len(self._batch)
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
        self._backoff.reset()
        with self._cond:
            if self._outage_since is None:
                return
            down = time.monotonic() - self._outage_since
            self._outage_since = None
            self._dropping = False
            dropped = self.dropped
        logger.warning(
            "redis bus: %s: reachable again after %.1fs (%d windows dropped so far)",
            self.url,
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
            calls = [self._script_call(item, stamp) for item in batch[:run]]
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(PUBLISH_SHA, len(keys), *keys, *args)
            results = pipe.execute(raise_on_error=False)
            done, error = self._tally(batch[:run], results)
            self._settle(done)
            if error is not None:
                raise error
            if done < run:
                self.client.script_load(PUBLISH_SCRIPT)

    def _tally(self, items: list[_Item], results: list[Any]) -> tuple[int, Exception | None]:
        """Count results up to the first missing script (NOSCRIPT: load it and go on) or
        transient error (retry): how many items are settled, and that error."""
        for index, (item, result) in enumerate(zip(items, results, strict=True)):
            if isinstance(result, redis.exceptions.NoScriptError):
                return index, None
            if isinstance(result, Exception):
                if _transient(result):
                    return index, result
                logger.warning("redis bus: %s: %s rejected: %s", self.url, _describe(item), result)
                with self._cond:
                    self.rejected += 1
                    self.errors += 1
                continue
            with self._cond:
                if result == 1:
                    self.published += 1
                elif result == 2:
                    self.announced += 1
                else:
                    self.duplicates += 1
        return len(items), None

    def _script_call(self, item: _Item, stamp: str) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of the publish script for one record (module docstring's rules)."""
        k, cfg = self.keys, self.config
        record = item.record
        assert isinstance(record, WindowRecord | EventRecord)
        data = record.model_copy(update={"published_at": stamp}).to_json()
        retention = round(cfg.retention_s * 1000) if cfg.retention_s else 0
        head: list[str | int] = [data, "", cfg.dedupe_ttl_s, cfg.event_ttl_s, retention]
        if isinstance(record, WindowRecord):
            head[1] = _live_json("window", data)
            keys = [k.seen("window", _identity(record)), "", k.live(record.source), ""]
            return [*keys, k.windows(record.source)], [*head, cfg.windows_maxlen]
        head[1] = _live_json("event", data)
        live, latest = k.live(record.source), k.event(record.id)
        streams = [k.events(record.source), k.events()]
        maxlens = [cfg.events_maxlen, cfg.all_events_maxlen]
        ident = _identity(record)
        open_first = cfg.publish_open_events
        if open_first is None:
            open_first = record.wall_start is not None  # a live source's event
        if not open_first:
            if record.ongoing:
                return [k.seen("event-open", ident), "", live, latest], head
            return [k.seen("event", ident), "", live, latest, *streams], [*head, *maxlens]
        later = "" if record.ongoing else k.seen("event-close", ident)
        return [k.seen("event", ident), later, live, latest, *streams], [*head, *maxlens]

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
        """Read-modify-write of one registry entry (WATCH/MULTI), plus its live message."""
        key = self.keys.streams
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, source)
                    entry = update(json.loads(raw) if raw else None)
                    pipe.multi()
                    pipe.hset(key, source, json.dumps(entry))
                    if announce is not None:
                        pipe.publish(self.keys.live(source), announce)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def _sync(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except redis.RedisError as exc:
            raise RedisUnavailable(f"{self.url}: {error_reason(exc)}") from None


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
