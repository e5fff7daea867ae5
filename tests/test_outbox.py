"""The producer's outbox: records kept until acknowledged, bounded by bytes (pure logic)."""

from __future__ import annotations

from redis_fixtures import event, window

from mmlm_stream.bus.outbox import Outbox


def test_a_failed_delivery_keeps_the_batch_first_in_line():
    outbox = Outbox(max_bytes=10**6)
    for i in range(5):
        outbox.add_window(window(i * 2.0))
    first = outbox.take(3)
    outbox.failed()
    again = outbox.take(3)
    assert [o.record for o in again] == [o.record for o in first]
    outbox.done()
    assert [o.record.start for o in outbox.take(10)] == [6.0, 8.0]


def test_a_full_outbox_drops_the_oldest_windows_but_no_event_nor_the_batch_in_flight():
    one = len(window(0.0).to_json())
    outbox = Outbox(max_bytes=one * 4)
    outbox.add_window(window(0.0))
    outbox.add_event(event(0.0))
    in_flight = outbox.take(1)
    dropped = sum(outbox.add_window(window(i * 2.0)) for i in range(1, 8))
    kinds = [(o.kind, o.record.start) for o in outbox.take(100)]
    assert dropped == outbox.dropped and dropped > 0
    assert kinds[0] == ("window", 0.0) and in_flight[0].record.start == 0.0
    assert ("event", 0.0) in kinds
    assert kinds[-1] == ("window", 14.0)  # the newest is kept
    assert outbox.bytes <= one * 4 + len(event(0.0).to_json())


def test_states_are_kept_in_order_with_the_records():
    outbox = Outbox(max_bytes=10**6)
    outbox.add_window(window(0.0))
    outbox.add_state("cam", {"state": "streaming"})
    outbox.add_event(event(2.0))
    assert [o.kind for o in outbox.take(10)] == ["window", "state", "event"]
    outbox.done()
    assert len(outbox) == 0 and outbox.bytes == 0
