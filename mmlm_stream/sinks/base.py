"""What a sink is: one far side (an MQTT broker, a webhook URL) that events are handed to.

A sink's ``deliver`` returns only once the far side confirmed the event (a PUBACK, a 2xx),
so the runner can acknowledge the Redis entry after it. It raises ``FarSideDown`` when the
far side cannot be reached at all (nothing about this event is wrong: the runner waits and
tries again, for as long as it takes, and Redis holds what comes meanwhile) and
``DeliveryFailed`` when the far side refused or failed this event (counted: after
``max_attempts`` the event goes to the dead letters with the reason).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from mmlm_stream.config.sinks import SinkFilter
from mmlm_stream.records.schema import EventRecord, WindowRecord

CONDITION_TYPES = frozenset({"label", "query", "sound", "fusion"})
"""Event types that hold for a while: an ongoing version opens them, a closing one ends them."""


class DeliveryFailed(Exception):
    """The far side refused or failed this event; ``permanent``: retrying cannot help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class FarSideDown(Exception):
    """The far side cannot be reached; not this event's fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sink(ABC):
    """One far side. ``wants_windows``: the runner also hands it each source's windows."""

    wants_windows: bool = False

    def start(self) -> None:
        """Begin connecting (without blocking)."""
        return None

    @abstractmethod
    def deliver(self, event: EventRecord) -> None:
        """Hand over one event; return once the far side confirmed it (module docstring)."""

    def deliver_window(self, window: WindowRecord) -> None:
        """Hand over a window (only when ``wants_windows``); best effort, latest wins."""
        return None

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        """Disconnect cleanly (an MQTT sink says it is offline first)."""
        return None


def accepts(rule: SinkFilter, event: EventRecord) -> bool:
    """Whether a sink's filter takes ``event``."""
    if rule.sources and event.source not in rule.sources:
        return False
    if rule.types and event.type not in rule.types:
        return False
    if rule.keys and event.key not in rule.keys:
        return False
    # A condition's closing version is delivered whatever its score: its opening was.
    closing = event.type in CONDITION_TYPES and not event.ongoing
    return closing or event.confidence >= rule.min_confidence
