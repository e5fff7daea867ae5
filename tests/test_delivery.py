"""A Decoder's delivery loop against a stand-in Publisher handle (asyncio logic only; the
real deployment is exercised by tests/chaos)."""

from __future__ import annotations

import asyncio

from redis_fixtures import window

from mmlm_stream.bus.outbox import Outbox
from mmlm_stream.deployments.delivery import Delivery
from mmlm_stream.pipeline.aggregate import WindowOutput
from mmlm_stream.pipeline.jobs import EventsDone, WindowDone


class _Call:
    def __init__(self, publisher: _Publisher) -> None:
        self.publisher = publisher

    def remote(self, batch: list) -> asyncio.Future:
        return asyncio.ensure_future(self.publisher.take(batch))


class _Publisher:
    """Answers like Publisher.deliver: only once 'Redis' (the gate) lets records through."""

    def __init__(self, fail_first: int = 0) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_first = fail_first
        self.delivered: list = []
        self.deliver = _Call(self)

    async def take(self, batch: list) -> int:
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("replica died")
        await self.gate.wait()
        self.delivered.extend(batch)
        return len(batch)


def _live_window(start: float) -> WindowDone:
    record = window(start, "cam").model_copy(update={"wall_start": "2026-12-01T00:00:00.000Z"})
    return WindowDone(WindowOutput(record, [], None))  # type: ignore[arg-type]


def test_records_are_handed_again_when_the_publisher_dies_and_kept_in_order():
    async def scenario() -> list[float]:
        publisher = _Publisher(fail_first=2)
        delivery = Delivery(publisher, Outbox(10**6))
        for i in range(5):
            delivery.enqueue(_live_window(i * 2.0))
        assert await delivery.drain(10)
        delivery.close()
        return [item.record.start for item in publisher.delivered]

    assert asyncio.run(scenario()) == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_a_full_outbox_is_announced_degraded_and_streaming_again_once_cleared():
    async def scenario() -> tuple[list[str], list[str]]:
        publisher = _Publisher()
        publisher.gate.clear()  # Redis away: nothing is acknowledged
        size = len(window(0.0, "cam").to_json())
        delivery = Delivery(publisher, Outbox(size * 4))
        states: list[str] = []
        for i in range(12):
            for message in delivery.enqueue(_live_window(i * 2.0)):
                if isinstance(message, EventsDone):
                    states += [e.key for e in message.events if e.type == "stream"]
        publisher.gate.set()
        assert await delivery.drain(10)
        for message in delivery.enqueue(_live_window(24.0)):
            if isinstance(message, EventsDone):
                states += [e.key for e in message.events if e.type == "stream"]
        assert await delivery.drain(10)
        delivery.close()
        kinds = [item.kind for item in publisher.delivered]
        return states, kinds

    states, kinds = asyncio.run(scenario())
    assert states == ["degraded", "streaming"]
    assert kinds.count("state") == 2  # both transitions reach the registry too
