"""The one configuration file (YAML) overlaid by ``MMLM_*`` environment variables.

Every key has a default and a description; unknown keys are an error (contract §9).
Environment variables address nested keys with a double underscore:
``MMLM_DECODE__FRAME_FPS=2`` sets ``decode.frame_fps``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmlm_stream.config.api import BLANK_TOKEN, ApiConfig, is_blank_secret
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.describer import DescriberConfig
from mmlm_stream.config.events import EventsConfig
from mmlm_stream.config.fusion import FusionConfig
from mmlm_stream.util.errors import ConfigError

ENV_PREFIX = "MMLM_"


class FramePolicy(StrEnum):
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    BLOCK = "block"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReconnectConfig(_Section):
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


class DecodeConfig(_Section):
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


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmlm-stream"


class RoleConfig(_Section):
    """Settings every encoder role shares; null means "use the model set's / global value"."""

    model: str | None = Field(
        None, description="Model id or local folder replacing the model set's choice."
    )
    device: str | None = Field(
        None, description="auto, cpu, cuda or cuda:N (default: models.device)."
    )
    dtype: str | None = Field(
        None, description="auto, float32, float16 or bfloat16 (default: models.dtype)."
    )
    batch_size: int = Field(8, ge=1, description="Items per inference call.")


class FramesModelConfig(RoleConfig):
    batch_size: int = Field(
        4, ge=1, description="Frames per inference call (4 measured fastest on CPU; more on GPU)."
    )
    top_k: int = Field(5, ge=1, description="Labels kept per frame.")
    vocabulary: list[str] = Field(
        default_factory=list,
        description="Zero-shot label vocabulary (hub set); empty = the built-in list.",
    )


class AudioModelConfig(RoleConfig):
    batch_size: int = Field(8, ge=1, description="Audio chunks per inference call.")
    top_k: int = Field(5, ge=1, description="Tags kept per patch and per chunk.")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Speech probability threshold.")
    vocabulary: list[str] = Field(
        default_factory=list,
        description="Zero-shot sound vocabulary (hub set, CLAP); empty = the built-in list.",
    )


class SpeechModelConfig(RoleConfig):
    batch_size: int = Field(4, ge=1, description="30 s speech windows per inference call.")
    language: str | None = Field(None, description="Spoken language (e.g. 'en'); null = detect.")
    word_timestamps: bool = Field(True, description="Include word times in transcripts.")
    beam_size: int = Field(1, ge=1, description="Beam width of decoding (1 = greedy).")


class TextModelConfig(RoleConfig):
    batch_size: int = Field(32, ge=1, description="Texts per inference call.")


class OcrModelConfig(RoleConfig):
    enabled: bool = Field(False, description="Read on-screen text (slow on CPU).")
    fps: float = Field(0.2, gt=0, description="Frames per second of media given to OCR.")
    min_score: float = Field(0.5, ge=0, le=1, description="Drop text read with less confidence.")
    batch_size: int = Field(1, ge=1, description="Frames per OCR call.")


class DetectorModelConfig(RoleConfig):
    enabled: bool = Field(
        True, description="Detect people and objects when the set has a detector."
    )
    fps: float = Field(1.0, gt=0, description="Frames per second of media given to the detector.")
    threshold: float = Field(0.5, ge=0, le=1, description="Minimum detection score.")
    batch_size: int = Field(4, ge=1, description="Frames per detector call.")
    gated: bool = Field(
        True,
        description="Detect only frames where something may be there: motion since the last "
        "detected frame once the camera's own pan and zoom are taken out, new picture panned "
        "into view, a zoom past 1.15x, an animal or person appearing in the frame labels, or "
        "refresh_s passed; other frames keep the last detections, moved with the camera.",
    )
    refresh_s: float = Field(
        10.0, gt=0, description="Gated: detect at least this often (media seconds) anyway."
    )


class ModelsConfig(_Section):
    """Which model set runs, where, and per-role overrides (contract §8)."""

    set: str = Field("default", description="Model set: default, hub or tiny.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    dtype: str = Field("auto", description="auto (fp16/bf16 on GPU, fp32 on CPU) or explicit.")
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where assembled weights (Whisper base) and tiny models are kept.",
    )
    allow_download: bool = Field(
        False, description="Let the hub set download missing weights (never by default)."
    )
    frames: FramesModelConfig = Field(default_factory=FramesModelConfig)
    audio: AudioModelConfig = Field(default_factory=AudioModelConfig)
    speech: SpeechModelConfig = Field(default_factory=SpeechModelConfig)
    text: TextModelConfig = Field(default_factory=TextModelConfig)
    ocr: OcrModelConfig = Field(default_factory=OcrModelConfig)
    detector: DetectorModelConfig = Field(default_factory=DetectorModelConfig)


class WindowConfig(_Section):
    """How media time is cut into windows (contract §3)."""

    window_s: float = Field(4.0, gt=0, description="Length of a window in seconds.")
    hop_s: float = Field(2.0, gt=0, description="Step between window starts; = window_s: tumbling.")
    max_lateness_s: float = Field(
        5.0, gt=0, description="Live sources: close a window this long (wall time) after its end."
    )
    top_k: int = Field(5, ge=1, description="Labels per modality kept in a window record.")
    smoothing: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="How slowly a label's score decays from one window to the next.",
    )

    @model_validator(mode="after")
    def _hop_fits(self) -> WindowConfig:
        if self.hop_s > self.window_s:
            raise ValueError("hop_s must not exceed window_s")
        return self


class LiveConfig(_Section):
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


class SupervisorConfig(_Section):
    """How the service brings live streams back after their analysis died."""

    restart_initial_s: float = Field(
        1.0, gt=0, description="First delay before restarting a stream's analysis."
    )
    restart_max_s: float = Field(
        30.0, gt=0, description="Longest delay between restarts of one stream."
    )
    failed_retry_s: float = Field(
        600.0,
        gt=0,
        description="A stream whose source is permanently invalid (401/404, no decodable "
        "stream) is tried again after this long.",
    )
    stable_s: float = Field(
        30.0,
        gt=0,
        description="An analysis that ran this long resets the restart backoff.",
    )
    reconcile_s: float = Field(
        5.0, gt=0, description="How often the registry in Redis is compared with what runs."
    )


class JobsConfig(_Section):
    """Limits on each input of a batch job or ``describe`` (sources that are not live)."""

    max_duration_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="Media seconds an input may cover; one that reaches it (an endless HTTP "
        "stream, say) ends with an error naming the input.",
    )
    max_bytes: int = Field(
        64 * 1024**3,
        ge=1,
        description="Largest input: a local file's size, checked before it is opened, and "
        "for any input the bytes of media packets read.",
    )


class Config(_Section):
    """Top level of the configuration file."""

    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    describer: DescriberConfig = Field(default_factory=DescriberConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)


# Taken literally (a token may hold '#', ': ' or only digits, which YAML would cut or turn
# into a number) and never empty: elsewhere an empty value reads as null, which for these
# would mean "no auth" even when the config file sets a token.
_SECRET_KEYS = frozenset({("api", "api_token"), ("api", "api_token_file")})


def _overlay_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = data
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment {name}: '{key}' is not a section")
            node = child
        if tuple(path) in _SECRET_KEYS:
            if is_blank_secret(raw):
                raise ConfigError(f"environment {name}: {BLANK_TOKEN}")
            node[path[-1]] = raw.strip()
        else:
            node[path[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def _describe(error: ValidationError, origin: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{origin}: {where}: {first['msg']}{more}"


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any), apply ``MMLM_*`` variables, validate everything."""
    origin = str(path) if path else "configuration"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    data = _overlay_env(data, os.environ if environ is None else environ)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None
