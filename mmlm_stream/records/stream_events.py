"""Stream state transitions of live sources as published ``stream`` events (contract §4)."""

from __future__ import annotations

from mmlm_stream.records.channels import StreamState, StreamStatus
from mmlm_stream.records.schema import EventRecord, event_id, utc_stamp, window_id

_SENTENCES = {
    StreamState.CONNECTING: "The stream is connecting.",
    StreamState.STREAMING: "The stream is up.",
    StreamState.DEGRADED: "The stream is up but results are being dropped.",
    StreamState.RECONNECTING: "The stream dropped and is reconnecting.",
    StreamState.FAILED: "The stream failed; it will be tried again later.",
    StreamState.ENDED: "The stream stopped.",
}


def status_event(status: StreamStatus) -> EventRecord:
    """A point event keyed by the new state, at the media time of the transition."""
    reason = f" ({status.reason})" if status.reason else ""
    return EventRecord(
        id=event_id(status.source, "stream", status.state.value, status.time)
        + f":{round(status.wall.timestamp() * 1000)}",
        source=status.source,
        type="stream",
        key=status.state.value,
        start=status.time,
        end=status.time,
        confidence=1.0,
        description=_SENTENCES[status.state] + reason,
        window_id=window_id(status.source, 0.0),
        evidence={
            "stream": {
                "state": status.state.value,
                "reason": status.reason,
                "attempt": status.attempt,
            }
        },
        wall_start=utc_stamp(status.wall),
    )


def registry_state(event: EventRecord) -> dict[str, object]:
    """The registry's ``state`` entry that a ``stream`` event stands for, so the hash and
    the last stream event always say the same."""
    return {"state": event.key, "since": event.wall_start, **event.evidence["stream"]}
