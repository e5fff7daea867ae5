"""The invariant checker of the chaos harness on made-up records (no Ray, no Redis, fast):
each invariant reports what it should, by name, and stays quiet on a healthy stream."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from chaos import harness
from chaos.harness import ActorInfo, StreamView, Violations, check_invariants
from mmlm_stream.records.schema import utc_stamp

HOP = 2.0


def stamp(epoch_s: float) -> str:
    from datetime import UTC, datetime

    return utc_stamp(datetime.fromtimestamp(epoch_s, UTC))


@dataclass
class FakeAudit:
    delivered: set[str] = field(default_factory=set)
    unknown: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stream: str = "mmlm:events"
    group: str = harness.AUDIT_GROUP

    def seen(self) -> set[str]:
        return set(self.delivered)


@dataclass
class FakeRedis:
    pending: int = 0

    def xpending(self, stream: str, group: str) -> dict[str, Any]:
        return {"pending": self.pending}


@dataclass
class FakeLive:
    announced: set[str] = field(default_factory=set)

    def closed(self) -> set[str]:
        return set(self.announced)


class FakeService:
    """What the checker reads of a ChaosService, held in lists."""

    source_ids = ("cam1",)
    hop_s = window_s = HOP
    fresh_s = 14.0
    prefix = "mmlm"

    def __init__(self) -> None:
        self.known_duplicates: set[tuple[str, str, str | None]] = set()
        self.known_orphans: set[str] = set()
        self.baseline_aggregators: dict[str, set[str]] = {}
        self.fault_ended_at: float | None = None
        self._windows: list[tuple[int, dict[str, Any]]] = []
        self._events: list[tuple[int, dict[str, Any]]] = []
        self.latest: dict[str, dict[str, Any]] = {}
        self.api_state = "streaming"
        self.redis_state: str | None = "streaming"
        self.audit = FakeAudit()
        self.redis = FakeRedis()
        self.live = FakeLive()

    # records
    def add_window(self, wall: float, start: float) -> None:
        record = {"window_id": f"cam1:{round(start * 1000)}", "wall_start": stamp(wall)}
        self._windows.append((int((wall + HOP + 0.2) * 1000), record))

    def add_event(self, wall: float, type_: str, key: str, *, ongoing: bool = False) -> str:
        event_id = f"cam1:{type_}:{key}:{round(wall * 1000)}"
        record = {"id": event_id, "type": type_, "key": key, "ongoing": ongoing,
                  "wall_start": stamp(wall)}  # fmt: skip
        self._events.append((int(wall * 1000), record))
        self.latest[event_id] = record
        self.audit.delivered.add(event_id)
        return event_id

    # the ChaosService surface the checker uses
    def windows(self, sid: str) -> list[tuple[int, dict[str, Any]]]:
        return list(self._windows)

    def events(self, sid: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        return list(self._events)

    def latest_event(self, event_id: str) -> dict[str, Any] | None:
        return self.latest.get(event_id)

    def view(self, sid: str) -> StreamView:
        last = self._windows[-1][0] if self._windows else None
        return StreamView(sid, self.api_state, None, len(self._windows), last)

    def redis_stream_entry(self, sid: str) -> dict[str, Any] | None:
        if self.redis_state is None:
            return None
        return {"source": sid, "state": {"state": self.redis_state}}


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> list[ActorInfo]:
    monkeypatch.setattr(harness, "STATE_SETTLE_S", 0.0)
    monkeypatch.setattr(harness, "CONSUMER_SETTLE_S", 0.0)
    monkeypatch.setattr(harness, "EVENTS_SETTLE_S", 0.0)
    alive = [ActorInfo("a1", "SourceAggregatorActor", "mmlm-agg:cam1:00000001", "ALIVE", 1)]
    monkeypatch.setattr(harness, "aggregator_actors", lambda sid: list(alive))
    return alive


def healthy(seconds: float = 40.0) -> tuple[FakeService, float]:
    """A stream up since ``seconds`` ago with a window every hop until now."""
    service = FakeService()
    t0 = time.time() - seconds
    service.add_event(t0, "stream", "connecting")
    service.add_event(t0 + 0.5, "stream", "streaming")
    for k in range(int((seconds - 3) / HOP)):
        service.add_window(t0 + 1 + k * HOP, k * HOP)
    return service, t0


def names(violations: Violations) -> set[str]:
    return {line.split(":", 1)[0] for line in violations}


def test_a_healthy_stream_breaks_nothing() -> None:
    service, t0 = healthy()
    assert check_invariants(service, int(t0 * 1000)) == []  # type: ignore[arg-type]


def test_a_gap_without_a_reconnect_loses_windows() -> None:
    service, t0 = healthy()
    del service._windows[5:9]  # 4 windows never published
    found = check_invariants(service, int(t0 * 1000))  # type: ignore[arg-type]
    assert names(found) == {"windows-continuous"}
    assert found.windows_lost == 4
    assert "cam1:8000" in found[0] and "cam1:18000" in found[0]


def test_a_gap_with_reconnecting_then_streaming_is_excused() -> None:
    service, t0 = healthy()
    del service._windows[5:9]
    service.add_event(t0 + 1 + 8 * HOP + 0.3, "stream", "reconnecting")
    service.add_event(t0 + 1 + 8 * HOP + 1.5, "stream", "streaming")
    assert check_invariants(service, int(t0 * 1000)) == []  # type: ignore[arg-type]


def test_a_gap_before_since_is_not_this_faults() -> None:
    service, t0 = healthy()
    del service._windows[2:4]
    since = t0 + 1 + 10 * HOP
    assert check_invariants(service, int(since * 1000)) == []  # type: ignore[arg-type]


def test_a_stream_that_stopped_publishing_is_reported() -> None:
    service, t0 = healthy(60)
    del service._windows[-12:]
    found = check_invariants(service, int(t0 * 1000))  # type: ignore[arg-type]
    assert "windows-tail" in names(found)
    assert found.windows_lost >= 1


def test_the_same_window_twice_is_a_duplicate_once() -> None:
    service, t0 = healthy()
    service._windows.insert(7, service._windows[6])
    found = check_invariants(service, int(t0 * 1000))  # type: ignore[arg-type]
    assert names(found) == {"windows-unique"} and found.duplicates == 1
    service.known_duplicates |= found.duplicate_keys  # reported once, not by every later check
    assert check_invariants(service, int(t0 * 1000)) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("api", "redis_state", "last_event"),
    [("failed", "streaming", None), ("streaming", None, None), ("streaming", "streaming", "ended")],
)
def test_states_must_agree(api: str, redis_state: str | None, last_event: str | None) -> None:
    service, t0 = healthy()
    service.api_state, service.redis_state = api, redis_state
    if last_event:
        service.add_event(time.time() - 1, "stream", last_event)
    found = check_invariants(service, int(t0 * 1000))  # type: ignore[arg-type]
    assert "state-consistent" in names(found)
    assert any(f"API says {api!r}" in line for line in found)


def test_an_open_event_is_fine_until_no_one_can_close_it(quick: list[ActorInfo]) -> None:
    service, t0 = healthy()
    service.baseline_aggregators = {"cam1": {"mmlm-agg:cam1:00000001"}}
    opened = service.add_event(t0 + 5, "sound", "alarm", ongoing=True)
    closed = service.add_event(t0 + 7, "label", "grey", ongoing=True)
    service.latest[closed] = {**service.latest[closed], "ongoing": False}
    assert check_invariants(service, int(t0 * 1000)) == []  # type: ignore[arg-type]

    quick[:] = [ActorInfo("a2", "SourceAggregatorActor", "mmlm-agg:cam1:00000002", "ALIVE", 2)]
    found = check_invariants(service, int(t0 * 1000))  # type: ignore[arg-type]
    assert names(found) == {"events-closed"} and found.orphaned_events == 1
    assert opened in found[0] and "aggregator" in found[0]


def test_a_superseded_open_event_is_an_orphan() -> None:
    service, t0 = healthy()
    first = service.add_event(t0 + 5, "sound", "alarm", ongoing=True)
    service.add_event(t0 + 15, "sound", "alarm", ongoing=True)
    found = check_invariants(service, int(t0 * 1000))  # type: ignore[arg-type]
    assert found.orphan_ids == {harness.identity(service.latest[first])}


def test_more_than_one_aggregator(quick: list[ActorInfo]) -> None:
    service, t0 = healthy()
    quick.append(ActorInfo("a2", "SourceAggregatorActor", "mmlm-agg:cam1:00000002", "ALIVE", 2))
    found = check_invariants(service, int(t0 * 1000))  # type: ignore[arg-type]
    assert names(found) == {"one-aggregator"}


def test_the_consumer_group_gets_and_acks_everything() -> None:
    service, t0 = healthy()
    lost = service.add_event(t0 + 9, "sound", "loud")
    service.audit.delivered.discard(lost)
    service.redis.pending = 2
    found = check_invariants(service, int(t0 * 1000))  # type: ignore[arg-type]
    assert names(found) == {"consumer-acked"}
    assert any("never delivered" in line for line in found)
    assert any("2 entries pending" in line for line in found)


def test_an_event_twice_in_one_session_is_a_duplicate() -> None:
    service, t0 = healthy()
    opened = service.add_event(t0 + 5, "sound", "loud", ongoing=True)
    closing = {**service.latest[opened], "ongoing": False, "wall_start": stamp(t0 + 4.6)}
    service._events.append((int((t0 + 12) * 1000), closing))  # re-stamped, so a new entry
    service.latest[opened] = closing
    found = check_invariants(service, int(t0 * 1000))  # type: ignore[arg-type]
    assert names(found) == {"events-unique"} and found.duplicates == 1
    assert opened in found[0]


def test_the_same_event_id_in_a_new_session_is_another_event() -> None:
    service, t0 = healthy()
    first = service.add_event(t0 + 5, "sound", "loud")
    service.add_event(t0 + 20, "stream", "reconnecting")
    service.add_event(t0 + 21, "stream", "connecting")
    service.add_event(t0 + 22, "stream", "streaming")
    again = {**service.latest[first], "wall_start": stamp(t0 + 22)}
    service._events.append((int((t0 + 22) * 1000), again))
    assert check_invariants(service, int(t0 * 1000)) == []  # type: ignore[arg-type]


def test_an_event_id_reused_by_the_next_session() -> None:
    """Ids repeat per session, so {p}:event:{id} may hold the next session's event: the
    closing announced on the live channel then shows the first one was closed."""
    service, t0 = healthy()
    first = service.add_event(t0 + 1, "sound", "loud", ongoing=True)
    old = dict(service.latest[first])
    service.add_event(t0 + 20, "stream", "reconnecting")
    service.add_event(t0 + 21, "stream", "connecting")
    service.add_event(t0 + 22, "stream", "streaming")
    again = {**old, "wall_start": stamp(t0 + 22)}
    service._events.append((int((t0 + 22) * 1000), again))
    service.latest[first] = again  # the hash now describes the second session's event
    found = check_invariants(service, int(t0 * 1000))  # type: ignore[arg-type]
    assert names(found) == {"events-closed"}
    assert "later session's event with the same id" in found[0]

    service.live.announced.add(harness.identity(old))  # its closing was announced
    assert check_invariants(service, int(t0 * 1000)) == []  # type: ignore[arg-type]


# --------------------------------------------------------------- fault-specific checks


def test_reconnect_attempts_must_exceed_the_minimum() -> None:
    injected = {"source": "cam1", "gone_s": 60.0, "refused_connects": 1400, "port_refused": True}
    assert harness.check_reconnect_attempts(FakeService(), injected) == []  # type: ignore[arg-type]
    few = {**injected, "refused_connects": harness.MIN_RECONNECT_ATTEMPTS}
    found = harness.check_reconnect_attempts(FakeService(), few)  # type: ignore[arg-type]
    assert [line.split(":", 1)[0] for line in found] == ["reconnect-attempts"]
    still_open = {**injected, "port_refused": False, "refused_connects": None}  # no counter
    found = harness.check_reconnect_attempts(FakeService(), still_open)  # type: ignore[arg-type]
    assert [line.split(":", 1)[0] for line in found] == ["fault-injected"]


def test_the_refused_connects_counter_counts_refused_connects() -> None:
    before = harness.tcp_attempt_fails()
    if before is None:
        pytest.skip("no /proc/net/snmp here")
    with harness.socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connects are refused
        assert all(harness._refused(port) for _ in range(5))
    after = harness.tcp_attempt_fails()
    assert after is not None and after - before >= 5


def test_the_timeout_path_needs_a_reconnecting_for_the_timeout() -> None:
    service, t0 = healthy()
    since = int(t0 * 1000)
    assert "timeout-path" in harness.check_timeout_path(service, since)[0]  # type: ignore[arg-type]
    service.add_event(t0 + 20, "stream", "reconnecting")
    reason = f"frames encoder did not answer within {harness.CALL_TIMEOUT_S:g}s"
    service._events[-1][1]["evidence"] = {"stream": {"reason": reason}}
    assert harness.check_timeout_path(service, since) == []  # type: ignore[arg-type]


def test_a_backlog_must_reach_redis() -> None:
    service, t0 = healthy()
    paused_ms = int((t0 + 20) * 1000)
    counted = len([ms for ms, _w in service._windows if ms < paused_ms])
    injected = {"paused_ms": paused_ms, "counted": {"cam1": counted}, "backlog": {"cam1": 2}}
    assert harness.check_backlog_delivered(service, injected) == []  # type: ignore[arg-type]
    # The API counted windows that Redis never got.
    injected = {**injected, "counted": {"cam1": counted - 3}}
    found = harness.check_backlog_delivered(service, injected)  # type: ignore[arg-type]
    assert len(found) == 1 and found[0].startswith("backlog-delivered: cam1:")


@dataclass
class SchemaRedis:
    letters: list[tuple[bytes, dict[bytes, bytes]]] = field(default_factory=list)
    pending: set[str] = field(default_factory=set)

    def xrange(self, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return list(self.letters)

    def xpending_range(self, stream: str, group: str, lo: str, hi: str, count: int) -> list[Any]:
        return [{"message_id": lo}] if lo in self.pending else []


def test_a_newer_event_type_is_delivered_and_garbage_dead_lettered() -> None:
    service = FakeService()
    fake = SchemaRedis()
    service.redis = fake  # type: ignore[assignment]
    event_id = "cam1:person_fell:chaos:1"
    injected = {
        "id": event_id,
        "entries": {"mmlm:events:cam1": "1-0", "mmlm:events": "2-0"},
        "unreadable_entry": "3-0",
        "dead_letters": "mmlm:dead:chaos-audit",
    }
    letter = {b"stream": b"mmlm:events", b"id": b"3-0", b"reason": b"not JSON: ...",
              b"json": b"not json", b"group": b"chaos-audit"}  # fmt: skip
    fake.letters.append((b"9-0", letter))
    service.audit.delivered.add(event_id)
    service.audit.unknown = {event_id: '{"type":"person_fell","posture":{}}'}
    assert harness.check_newer_schema(service, injected) == []  # type: ignore[arg-type]

    service.audit.unknown = {event_id: '{"type":"person_fell"}'}
    fake.letters.append((b"9-1", {b"id": b"2-0", b"reason": b"unknown type"}))
    fake.pending.add("3-0")
    found = harness.check_newer_schema(service, injected)  # type: ignore[arg-type]
    assert names(Violations(found)) == {"newer-delivered", "dead-lettered"}
    assert any("lost its unknown field" in line for line in found)
    assert any("still pending" in line for line in found)

    fake.letters.clear()
    service.audit.delivered.clear()
    found = harness.check_newer_schema(service, injected)  # type: ignore[arg-type]
    assert any("never delivered" in line for line in found)
    assert any("is not in mmlm:dead:chaos-audit" in line for line in found)


def test_unreadable_entries_are_not_events() -> None:
    @dataclass
    class Entries:
        rows: list[tuple[bytes, dict[bytes, bytes]]]

        def xrange(self, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
            return self.rows

    holder = type("Holder", (), {"prefix": "mmlm"})()
    holder.redis = Entries(  # type: ignore[attr-defined]
        [
            (b"1-0", {b"json": b'{"id": "a", "type": "sound"}'}),
            (b"2-0", {b"json": b"not json"}),
            (b"3-0", {b"other": b"x"}),
            (b"4-0", {b"json": b"[1, 2]"}),
        ]
    )
    assert harness.ChaosService.events(holder) == [(1, {"id": "a", "type": "sound"})]  # type: ignore[arg-type]
