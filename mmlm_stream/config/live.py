"""Section ``live``: queues, timeouts and the outbox of live streams."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from mmlm_stream.config.section import Section


class FramePolicy(StrEnum):
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    BLOCK = "block"


class LiveConfig(Section):
    """Live sources: what happens when encoders fall behind the stream."""

    frame_policy: FramePolicy = Field(
        FramePolicy.DROP_OLDEST,
        description="When frames queue up: drop_oldest (sample fewer), drop_newest or block.",
    )
    max_queued_frames: int = Field(8, ge=1, description="Frames waiting for the encoders at most.")
    max_queued_items: int = Field(
        256, ge=1, description="Audio chunks and other items waiting at most (never dropped)."
    )
    call_timeout_s: float = Field(
        30.0,
        gt=0,
        description="An encoder or aggregator call of a live source that takes longer fails "
        "the analysis, which the supervisor restarts (a hung replica cannot hold a stream).",
    )
    max_pending_speech_s: float = Field(
        120.0,
        gt=0,
        description="Speech waiting for transcription at most (seconds of audio). While the "
        "recogniser is busy, utterances wait and go together in one packed call; only beyond "
        "this are the oldest dropped and counted (a last resort, so a slow recogniser cannot "
        "exhaust memory).",
    )
    outbox_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Records a Decoder keeps until Redis acknowledged them, in bytes of JSON; "
        "beyond it the oldest windows are dropped (counted, and announced by a 'degraded' "
        "stream event); events and states are never dropped.",
    )
