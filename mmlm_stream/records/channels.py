"""Typed items of the three time-aligned channels (frames, audio, subtitles) plus stream state.

Every item carries its media time in seconds from the start of the source, taken from packet
PTS. ``sort_time`` is what the decoder orders its output by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np

from mmlm_stream.util.redaction import redact_text

AUDIO_SAMPLE_RATE = 16_000


def utc_now() -> datetime:
    return datetime.now(UTC)


class StreamState(StrEnum):
    """Lifecycle of a live source: connecting -> streaming -> reconnecting -> failed | ended;
    ``degraded``: streaming, but records are being dropped on the way to the bus."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    DEGRADED = "degraded"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled video frame, RGB uint8 of shape (height, width, 3), already downscaled."""

    source: str
    time: float
    image: np.ndarray = field(repr=False)
    index: int = 0

    @property
    def sort_time(self) -> float:
        return self.time

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Tone:
    """A narrowband peak above a few kHz in ~50 ms of the source's native-rate audio.

    The decoder finds these before resampling to 16 kHz, so alarm and beeper tones the 16 kHz
    models cannot hear (one real alarm clock is a pure 8.2 kHz tone) still reach the windows.
    """

    time: float
    """Centre of the analysis frame, media seconds."""
    hz: float
    dbfs: float
    """Amplitude of the sine at the peak (a full-scale sine is 0)."""
    prominence_db: float
    """How far the peak stands above the median power of its band: 10 for noise, 40+ for a tone."""


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Mono float32 audio at ``sample_rate``; consecutive chunks have no gaps or overlaps.

    ``tones`` are the native-rate tonal peaks (``Tone``) whose frames ended by this chunk's end;
    ``short_term_dbfs`` is the loudest 400 ms ending in it and ``envelope_dbfs`` the level of
    each 100 ms ending in it, both measured at the native rate (None / empty: not measured;
    encoders then measure the 16 kHz samples).
    """

    source: str
    start: float
    samples: np.ndarray = field(repr=False)
    sample_rate: int = AUDIO_SAMPLE_RATE
    index: int = 0
    tones: tuple[Tone, ...] = ()
    short_term_dbfs: float | None = None
    envelope_dbfs: tuple[float, ...] = ()

    @property
    def sort_time(self) -> float:
        return self.start

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class SubtitleCue:
    """A subtitle cue as plain text (markup stripped). ``track`` names where it came from."""

    source: str
    start: float
    end: float
    text: str
    language: str | None = None
    track: str = ""

    @property
    def sort_time(self) -> float:
        return self.start


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """A transition of a live source's state, stamped with media and wall-clock time."""

    source: str
    state: StreamState
    time: float
    wall: datetime = field(default_factory=utc_now)
    reason: str | None = None
    attempt: int = 0

    def __post_init__(self) -> None:
        if self.reason is not None:
            object.__setattr__(self, "reason", redact_text(self.reason))

    @property
    def sort_time(self) -> float:
        return self.time


@dataclass(frozen=True, slots=True)
class DecodeWarning:
    """Something went wrong part-way; everything decodable before it was still yielded."""

    source: str
    time: float
    reason: str

    def __post_init__(self) -> None:
        # The reason names the input's URL; it reaches logs, records and API clients.
        object.__setattr__(self, "reason", redact_text(self.reason))

    @property
    def sort_time(self) -> float:
        return self.time


ChannelItem = Frame | AudioChunk | SubtitleCue | StreamStatus | DecodeWarning
