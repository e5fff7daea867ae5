"""Section ``decode``: what the decoder extracts from a source, and live reconnects."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from mmlm_stream.config.section import Section


class ReconnectConfig(Section):
    """How a live source comes back after it drops."""

    initial_s: float = Field(0.5, gt=0, description="First delay before reconnecting.")
    max_s: float = Field(30.0, gt=0, description="Upper bound of the delay between attempts.")
    factor: float = Field(2.0, ge=1, description="Growth of the delay per failed attempt.")
    jitter: float = Field(0.2, ge=0, le=1, description="Random spread of each delay (fraction).")
    max_attempts: int | None = Field(
        None, ge=0, description="Give up after this many failed attempts in a row; null = never."
    )
    stable_s: float = Field(
        10.0,
        ge=0,
        description="A connection must stream this long before the backoff starts again from "
        "initial_s, so a source that flaps every second is retried ever more slowly.",
    )


class DecodeConfig(Section):
    """What the decoder extracts from a source and how it treats live inputs."""

    frame_fps: float = Field(1.0, ge=0, description="Frames sampled per second of media; 0 = all.")
    frame_short_side: int = Field(
        256, ge=16, description="Frames are downscaled at decode time so the short side is this."
    )
    frame_size: tuple[int, int] | None = Field(
        None, description="Exact [width, height] of frames instead of frame_short_side."
    )
    frame_interpolation: str = Field("AREA", description="Scaler used when downscaling frames.")
    audio_chunk_s: float = Field(1.0, gt=0, description="Length of audio chunks (16 kHz mono).")
    audio_stream: int | None = Field(
        None, ge=0, description="Index among the audio streams to use; default: the first."
    )
    audio_language: str | None = Field(
        None, description="Prefer the first audio stream with this language tag (e.g. 'eng')."
    )
    subtitles: bool = Field(True, description="Decode embedded text subtitle streams.")
    sidecar_subtitles: bool = Field(
        True, description="Read .srt/.vtt/.ass/.ssa files next to a video file."
    )
    subtitle_files: list[Path] = Field(
        default_factory=list, description="Extra subtitle files to read for every input."
    )
    live: bool | None = Field(
        None, description="Treat the source as live; null = decide from the URL scheme."
    )
    realtime: bool = Field(False, description="Pace a file in real time (to act as a live feed).")
    loop: bool = Field(False, description="Start a file again at its end (implies live).")
    open_timeout_s: float = Field(10.0, gt=0, description="Give up opening a source after this.")
    stall_timeout_s: float = Field(
        10.0, gt=0, description="Watchdog: a source that delivers no packets for this long is lost."
    )
    reorder_limit: int = Field(
        512, ge=1, description="Most items held back to put the channels in time order."
    )
    max_gap_s: float = Field(
        60.0,
        gt=0,
        description="A forward timestamp jump longer than this (live sources: 30 s at most) is "
        "a discontinuity: media time continues where it was, with a warning. Windows across a "
        "longer stretch holding no item are skipped, not emitted one per hop.",
    )
    max_pixels: int = Field(
        8192 * 4320,
        ge=1,
        description="Largest video picture (width x height) decoded; a source whose video "
        "claims more fails before any frame is allocated.",
    )
    max_cue_chars: int = Field(
        2000,
        ge=1,
        description="Subtitle cue text longer than this (after markup removal) is cut, and "
        "the cut cues are counted in a warning.",
    )
    max_sidecar_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1,
        description="Subtitle files larger than this are skipped with a warning.",
    )
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)

    @model_validator(mode="after")
    def _positive_size(self) -> DecodeConfig:
        if self.frame_size is not None and min(self.frame_size) < 1:
            raise ValueError("frame_size must be two positive integers")
        return self
