"""Reading the bus: events through consumer groups, windows, and the live channel.

Delivery with a group is at-least-once: ``iter_events`` acknowledges (XACK) an entry when the
caller asks for the next one, i.e. after the loop body that handled it returned. An entry the
caller never finished (crash, kill) stays pending and comes back: to the same consumer name
when it restarts (its own pending entries are read first), or to any consumer of the group
once it has been idle ``claim_min_idle_s`` (XAUTOCLAIM). A caller that stops early after
handling an entry calls ``commit()`` to acknowledge it.

Records are read leniently (``records`` module docstring): unknown fields are kept and events
of types newer than this code are delivered (``known_type`` False), never dropped. ``types``
is a filter the consumer chose: the entries it leaves out are acknowledged without being
yielded, unknown types among them when a list of types is given (none given: all are
delivered). An entry that cannot be read at all (not JSON, no ``json`` field, another major
schema such as ``mmlm.event/2``, required fields missing) goes to the group's dead letters,
the stream ``{prefix}:dead:{group}`` (``BusKeys.dead``), with fields ``stream``, ``id``,
``group``, ``reason`` and ``json`` (the payload as it was, when there is one), and is
acknowledged only once that XADD succeeded; if it fails, the entry stays pending and comes
back with the next takeover. An entry that was deleted or trimmed while pending (no fields
left) is acknowledged, there is nothing to keep.

Without a group, ``iter_events`` tails the stream with plain XREAD: nothing is stored in
Redis and nothing is acknowledged (what ``mmlm-stream subscribe`` does without ``--group``);
an unreadable entry is logged and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TextIO, TypeVar

import redis
from redis.client import PubSub

from mmlm_stream.bus.redis_bus import BusKeys
from mmlm_stream.bus.redis_client import (
    RETRYABLE_ERRORS,
    RedisClient,
    client_for,
    error_reason,
    socket_timeout_of,
)
from mmlm_stream.bus.redis_server import connect
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.records.schema import EVENT_TYPES, EventRecord, UnreadableRecord, WindowRecord
from mmlm_stream.util.backoff import Backoff
from mmlm_stream.util.errors import ConfigError

logger = logging.getLogger(__name__)

M = TypeVar("M", EventRecord, WindowRecord)
Entry = tuple[bytes | str, dict[Any, Any] | None]
_READ_COUNT = 100


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raw_json(fields: dict[Any, Any]) -> bytes | str | None:
    raw = fields.get(b"json")
    return fields.get("json") if raw is None else raw


def read_record(fields: dict[Any, Any], model: type[M]) -> M:
    """The entry's record, read leniently; ``UnreadableRecord`` when it has none."""
    raw = _raw_json(fields)
    if raw is None:
        raise UnreadableRecord("no json field")
    return model.read_json(raw)


class Subscriber:
    """Reads one source's streams (``source``) or the stream of all events (no source).

    ``group`` None: plain tailing. ``consumer`` names this reader within the group (default
    ``<host>-<pid>``; give a stable name to resume its own pending entries after a restart).
    ``types`` keeps only those event types (filtered here; the others are still acknowledged).
    ``versions``: read every version of every event (``BusKeys.versions``) instead.
    """

    def __init__(
        self,
        redis_or_url: RedisClient | str,
        prefix: str = "mmlm",
        group: str | None = None,
        consumer: str | None = None,
        source: str | None = None,
        types: Iterable[str] | None = None,
        *,
        config: RedisConfig | None = None,
        versions: bool = False,
    ) -> None:
        self.config = config or RedisConfig(prefix=prefix)
        self.versions = versions
        self._owns_client = isinstance(redis_or_url, str)
        if isinstance(redis_or_url, str):
            # Blocking reads must not hit the socket timeout: none here, keepalive instead.
            self.client = client_for(redis_or_url, self.config, socket_timeout=None)
        else:
            self.client = redis_or_url
        cluster = self.config.cluster or isinstance(self.client, redis.RedisCluster)
        self.keys = BusKeys(prefix, cluster=cluster)
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.source = source
        self.types = frozenset(types) if types else None
        self._stop = threading.Event()
        self._batch = _READ_COUNT
        self._unacked: tuple[str, bytes | str] | None = None
        self._unacked_fields: dict[Any, Any] = {}
        self._down_since: float | None = None
        self._dead_letters_failing = False
        self._backoff = Backoff(
            initial=self.config.retry_initial_s, maximum=self.config.retry_max_s
        )

    @property
    def events_stream(self) -> str:
        if self.versions:
            return self.keys.versions
        return self.keys.events(self.source)

    @property
    def dead_letters(self) -> str:
        """The stream where this group's unreadable entries go (module docstring)."""
        if self.group is None:
            raise ValueError("no consumer group given")
        return self.keys.dead(self.group)

    def stop(self) -> None:
        """Make the iterators return (within one blocking read)."""
        self._stop.set()

    def close(self) -> None:
        """Stop; leave the group if nothing is pending for this consumer (so short-lived
        consumers such as ``subscribe --group`` do not pile up in it)."""
        self.stop()
        if self.group is not None:
            try:
                pending = self.client.xpending_range(
                    self.events_stream, self.group, "-", "+", 1, consumername=self.consumer
                )
                if not pending:
                    self.client.xgroup_delconsumer(self.events_stream, self.group, self.consumer)
            except redis.RedisError:
                pass  # best effort: a leftover consumer name costs nothing
        if self._owns_client:
            self.client.close()

    def ensure_group(self, from_start: bool = False) -> bool:
        """Create the group (and the stream) if missing: True when created now.

        ``from_start`` only matters then: the new group starts at the first entry kept
        (``0``) instead of at new entries (``$``); an existing group keeps its position.
        """
        if self.group is None:
            raise ValueError("no consumer group given")
        try:
            self.client.xgroup_create(
                self.events_stream, self.group, id="0" if from_start else "$", mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    def commit(self) -> None:
        """Acknowledge the entry yielded last, for callers that stop right after it."""
        if self._unacked is not None:
            stream, entry_id = self._unacked
            self._unacked = None
            self._ack(stream, [entry_id])

    def reject(self, reason: str) -> None:
        """Move the entry yielded last to the dead letters with ``reason`` (a consumer that
        could not handle it, e.g. a sink whose far side refused it) and acknowledge it.
        If the letter cannot be written the entry stays pending and comes back."""
        if self._unacked is None:
            raise ValueError("nothing yielded to reject")
        stream, entry_id = self._unacked
        self._unacked = None
        self._dead_letter(stream, entry_id, self._unacked_fields, reason, "was refused")

    def iter_events(
        self, block_ms: int = 5000, from_start: bool = False, batch: int = _READ_COUNT
    ) -> Iterator[EventRecord]:
        """Events until ``stop()``: with a group at-least-once (module docstring), else tailing
        from now (or from the first entry kept, ``from_start``). ``batch`` entries are read
        at a time: what a consumer read but never handled waits for a takeover, so a caller
        that stops after a few events should read few at a time."""
        self._batch = batch
        if self.group is None:
            yield from self._tail(self.events_stream, EventRecord, block_ms, from_start)
            return
        stream = self.events_stream
        self._retrying(lambda: self.ensure_group(from_start))
        block = self._block_ms(block_ms)
        claim_every = max(0.05, self.config.claim_min_idle_s / 2)
        backlog: bytes | str | None = "0"  # own pending entries first, then new ones
        next_claim = time.monotonic()
        while not self._stop.is_set():
            if backlog is not None:
                entries = self._read_group(stream, backlog, None)
                backlog = entries[-1][0] if entries else None
            elif time.monotonic() >= next_claim:
                entries = self._claim(stream)
                next_claim = time.monotonic() + claim_every
            else:
                wait = min(block, max(1, int((next_claim - time.monotonic()) * 1000)))
                entries = self._read_group(stream, ">", wait)
            skipped: list[bytes | str] = []
            for entry_id, fields in entries:
                if self._stop.is_set():
                    break  # the rest stays pending: redelivered (at-least-once)
                if not fields:  # deleted or trimmed while pending
                    skipped.append(entry_id)
                    continue
                try:
                    record = read_record(fields, EventRecord)
                except UnreadableRecord as exc:
                    self._dead_letter(stream, entry_id, fields, exc.reason)
                    continue
                if self.types is not None and record.type not in self.types:
                    skipped.append(entry_id)
                    continue
                if skipped:  # before the caller may stop for good
                    self._ack(stream, skipped)
                    skipped = []
                self._unacked = (stream, entry_id)
                self._unacked_fields = fields
                yield record
                self.commit()
            if skipped:
                self._ack(stream, skipped)

    def iter_windows(
        self, source: str | None = None, block_ms: int = 5000, from_start: bool = False
    ) -> Iterator[WindowRecord]:
        """One source's windows as they are published (plain XREAD, no group)."""
        source = source or self.source
        if source is None:
            raise ValueError("iter_windows needs a source")
        yield from self._tail(self.keys.windows(source), WindowRecord, block_ms, from_start)

    def tail_live(
        self, source: str | None = None, timeout_s: float = 1.0
    ) -> Iterator[dict[str, Any]]:
        """Live Pub/Sub messages (``kind``: window, event, status) of one source or all, as
        dicts; at-most-once, for dashboards. Subscribed when this returns, so nothing
        published afterwards is missed."""
        source = source or self.source
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        if source is None:
            pubsub.psubscribe(self.keys.live("*"))
        else:
            pubsub.subscribe(self.keys.live(source))
        return self._messages(pubsub, timeout_s)

    def _messages(self, pubsub: PubSub, timeout_s: float) -> Iterator[dict[str, Any]]:
        try:
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=timeout_s)
                if message is not None and message["type"] in ("message", "pmessage"):
                    yield json.loads(message["data"])
        finally:
            pubsub.close()

    # -- internals ------------------------------------------------------------------------------

    def _block_ms(self, block_ms: int) -> int:
        """A blocking read shorter than the client's socket timeout (if it has one)."""
        timeout = socket_timeout_of(self.client)
        if timeout:
            return max(10, min(block_ms, int(timeout * 1000) - 500))
        return max(10, block_ms)

    def _retrying(self, call: Any) -> Any:
        """Run ``call`` until Redis answers (or ``stop()``): one log line per outage."""
        while not self._stop.is_set():
            try:
                result = call()
            except RETRYABLE_ERRORS as exc:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    logger.warning("bus: %s; retrying", error_reason(exc))
                self._stop.wait(self._backoff.next_delay())
                continue
            if self._down_since is not None:
                logger.warning(
                    "bus: reachable again after %.1fs", time.monotonic() - self._down_since
                )
                self._down_since = None
            self._backoff.reset()
            return result
        return None

    def _read_group(self, stream: str, cursor: bytes | str, block: int | None) -> list[Entry]:
        def read() -> list[Entry]:
            try:
                reply = self.client.xreadgroup(
                    self.group, self.consumer, {stream: cursor}, count=self._batch, block=block
                )
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The server lost the group (restart without persistence, or it was
                # destroyed): recreate it from the first entry kept; at-least-once.
                self.ensure_group(from_start=True)
                return []
            return list(reply[0][1]) if reply else []

        return self._retrying(read) or []

    def _claim(self, stream: str) -> list[Entry]:
        """Entries other consumers read but left unacknowledged for ``claim_min_idle_s``."""
        min_idle = int(self.config.claim_min_idle_s * 1000)
        claimed: list[Entry] = []
        cursor: bytes | str = "0-0"
        while len(claimed) < _READ_COUNT:
            reply = self._retrying(
                lambda c=cursor: self.client.xautoclaim(
                    stream, self.group, self.consumer, min_idle, start_id=c, count=_READ_COUNT
                )
            )
            if not reply:
                break
            claimed += [entry for entry in reply[1] if entry[0] is not None]
            cursor = reply[0]
            if _text(cursor) == "0-0":
                break
        if claimed:
            logger.info("bus: took over %d stale entries of %s", len(claimed), stream)
        return claimed

    def _dead_letter(
        self,
        stream: str,
        entry_id: bytes | str,
        fields: dict[Any, Any],
        reason: str,
        what: str = "is unreadable",
    ) -> None:
        """Write the entry to the dead letters, then acknowledge it; if the write fails it
        stays pending (one log line until writing works again). At-least-once like the rest:
        a consumer that dies between the two writes the letter again on redelivery."""
        letter: dict[str, bytes | str] = {
            "stream": stream,
            "id": entry_id,
            "group": self.group or "",
            "reason": reason,
        }
        raw = _raw_json(fields)
        if raw is not None:
            letter["json"] = raw
        maxlen = self.config.events_maxlen or None
        try:
            self.client.xadd(self.dead_letters, letter, maxlen=maxlen, approximate=True)
        except redis.RedisError as exc:
            if not self._dead_letters_failing:
                self._dead_letters_failing = True
                logger.warning(
                    "bus: cannot write dead letters to %s (%s); unreadable entries stay pending",
                    self.dead_letters,
                    error_reason(exc),
                )
            return
        if self._dead_letters_failing:
            self._dead_letters_failing = False
            logger.warning("bus: writing dead letters to %s again", self.dead_letters)
        logger.warning(
            "bus: entry %s of %s %s (%s); moved to %s",
            _text(entry_id),
            stream,
            what,
            reason,
            self.dead_letters,
        )
        self._ack(stream, [entry_id])

    def _ack(self, stream: str, entry_ids: list[bytes | str]) -> None:
        try:
            self.client.xack(stream, self.group, *entry_ids)
        except redis.RedisError as exc:  # stays pending; redelivered later (at-least-once)
            logger.warning(
                "bus: acknowledgement failed (%s); will be redelivered", error_reason(exc)
            )

    def _tail(self, stream: str, model: type[M], block_ms: int, from_start: bool) -> Iterator[M]:
        block = self._block_ms(block_ms)
        if from_start:
            last: bytes | str = "0-0"
        else:
            newest = self._retrying(lambda: self.client.xrevrange(stream, count=1)) or []
            last = newest[0][0] if newest else "0-0"
        while not self._stop.is_set():
            reply = self._retrying(
                lambda c=last: self.client.xread({stream: c}, count=_READ_COUNT, block=block)
            )
            for entry_id, fields in reply[0][1] if reply else []:
                last = entry_id
                try:
                    record = read_record(fields or {}, model)
                except UnreadableRecord as exc:
                    logger.warning(
                        "bus: skipped unreadable entry %s of %s: %s", _text(entry_id), stream, exc
                    )
                    continue
                if isinstance(record, EventRecord) and self.types and record.type not in self.types:
                    continue
                yield record


def _clock(stamp: str | None) -> str:
    """``published_at`` as local wall-clock time with milliseconds."""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
    except ValueError:
        moment = None
    moment = (moment or datetime.now().astimezone()).astimezone()
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def format_event(event: EventRecord) -> str:
    """``12:04:05.123 sample.mkv  sound  alarm  15.2\u201317.2s  An alarm sounds (Alarm 0.88).``
    (local time of ``published_at``; an en dash between start and end)."""
    span = (
        f"{event.start:.1f}s"
        if round(event.start, 1) == round(event.end, 1)
        else f"{event.start:.1f}\u2013{event.end:.1f}s"
    )
    ongoing = " (ongoing)" if event.ongoing else ""
    return (
        f"{_clock(event.published_at)} {event.source}  {event.type}  {event.key}  {span}  "
        f"{event.description}{ongoing}"
    )


def run_subscribe(
    params: Any,
    config: RedisConfig,
    out: TextIO | None = None,
    *,
    client: RedisClient | None = None,
    block_ms: int = 5000,
) -> int:
    """``mmlm-stream subscribe``: print events (readable lines, or JSON lines with ``json``)
    until interrupted or ``count`` events were printed; returns the exit code.

    ``params`` is the argparse namespace (missing attributes get defaults): ``source``,
    ``type`` (names, each may be comma-separated), ``group``, ``consumer``, ``from_start``,
    ``json``, ``count``, ``no_embedded_redis``. ``client`` skips finding the server (tests).
    A type name must be known here, a typo would silently filter out everything; without
    ``type``, events of types newer than this code are printed too."""
    out = out or sys.stdout
    given = getattr(params, "type", None) or []
    types = [
        name.strip()
        for value in ([given] if isinstance(given, str) else given)
        for name in value.split(",")
        if name.strip()
    ] or None
    for name in types or []:
        if name not in EVENT_TYPES:
            raise ConfigError(
                f"--type {name}: unknown event type ({', '.join(sorted(EVENT_TYPES))})"
            )
    count = getattr(params, "count", None)
    if count is not None and count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}")
    group = getattr(params, "group", None)
    from_start = bool(getattr(params, "from_start", False))
    if client is None:
        embedded = config.embedded and not getattr(params, "no_embedded_redis", False)
        endpoint = connect(
            config,
            embedded,
            on_notice=lambda line: print(f"mmlm-stream: {line}", file=sys.stderr),
        )
        endpoint.client.close()
        client = client_for(endpoint.url, config, socket_timeout=None)
    subscriber = Subscriber(
        client,
        config.prefix,
        group=group,
        consumer=getattr(params, "consumer", None),
        source=getattr(params, "source", None),
        types=types,
        config=config,
    )
    if group is not None and from_start and not subscriber.ensure_group(from_start=True):
        print(
            f"mmlm-stream: group {group} exists; it continues from its position "
            "(--from-start applies to a new group)",
            file=sys.stderr,
        )
    batch = min(count, 100) if count is not None and group is not None else 100
    as_json = bool(getattr(params, "json", False))
    printed = 0
    try:
        for event in subscriber.iter_events(block_ms, from_start, batch):
            out.write((event.to_json() if as_json else format_event(event)) + "\n")
            out.flush()
            printed += 1
            if count is not None and printed >= count:
                subscriber.commit()
                break
    finally:
        subscriber.close()
    return 0
