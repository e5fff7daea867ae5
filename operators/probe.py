"""What a source offers: container, streams, subtitle cue counts, sidecars, chosen channels."""

from __future__ import annotations

from fractions import Fraction

import av
import av.error
import pysubs2
from pydantic import BaseModel, Field

from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.operators.container import (
    AV_TIME_BASE,
    ReadError,
    explain,
    open_container,
    select_streams,
    sidecar_candidates,
)
from mmlm_stream.operators.source import SourceSpec, resolve_source
from mmlm_stream.operators.subtitles import CueCleaner, read_sidecar, sidecar_language
from mmlm_stream.util.errors import SourceError


class StreamInfo(BaseModel):
    index: int
    type: str
    codec: str
    decodable: bool
    language: str | None = None
    title: str | None = None
    default: bool = False
    duration: float | None = None
    bit_rate: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    pix_fmt: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    layout: str | None = None
    cues: int | None = Field(None, description="Subtitle cues counted in a file.")


class SidecarInfo(BaseModel):
    path: str
    format: str
    language: str | None = None
    cues: int | None = None
    error: str | None = None


class ChosenChannels(BaseModel):
    """Stream indices the decoder would use for each channel."""

    video: int | None = None
    audio: int | None = None
    subtitles: list[int] = Field(default_factory=list)
    sidecars: int = 0


class ProbeResult(BaseModel):
    source: str
    url: str
    container: str
    container_long: str | None = None
    duration: float | None = None
    start_time: float | None = None
    bit_rate: int | None = None
    size_bytes: int | None = None
    streams: list[StreamInfo]
    sidecars: list[SidecarInfo] = Field(default_factory=list)
    channels: ChosenChannels
    notes: list[str] = Field(default_factory=list)


def _rate(value: Fraction | None) -> float | None:
    return round(float(value), 3) if value else None


def _stream_info(stream: av.stream.Stream) -> StreamInfo:
    ctx = stream.codec_context
    codec = ctx.name if ctx is not None and ctx.name else "none"
    duration = (
        float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    )
    info = StreamInfo(
        index=stream.index,
        type=stream.type,
        codec=codec,
        decodable=codec != "none",
        language=stream.metadata.get("language"),
        title=stream.metadata.get("title"),
        default=bool(stream.disposition & av.stream.Disposition.default),
        duration=duration,
        bit_rate=(ctx.bit_rate or None) if ctx is not None else None,
    )
    if stream.type == "video" and ctx is not None:
        info.width, info.height = stream.width, stream.height
        info.fps = _rate(stream.average_rate or stream.guessed_rate)
        info.pix_fmt = stream.format.name if stream.format is not None else None
    elif stream.type == "audio" and ctx is not None:
        info.sample_rate = stream.sample_rate or None
        info.channels = stream.channels or None
        info.layout = stream.layout.name if stream.layout is not None else None
    return info


def _count_cues(container: av.container.InputContainer, streams: list[StreamInfo]) -> None:
    subtitle_streams = [s for s in container.streams.subtitles]
    if not subtitle_streams:
        return
    counts = {s.index: 0 for s in subtitle_streams}
    try:
        for packet in container.demux(*subtitle_streams):
            if packet.size and packet.pts is not None:
                counts[packet.stream.index] += 1
    except (av.error.FFmpegError, OSError) as exc:
        raise ReadError(exc) from exc
    for info in streams:
        if info.index in counts:
            info.cues = counts[info.index]


def probe(
    target: str | SourceSpec, config: DecodeConfig | None = None, *, count_cues: bool = True
) -> ProbeResult:
    """Open ``target`` and describe it; cue counting reads a file's subtitle packets once."""
    cfg = config or DecodeConfig()
    spec = target if isinstance(target, SourceSpec) else resolve_source(target)
    notes: list[str] = []
    with open_container(spec, cfg) as container:
        streams = [_stream_info(stream) for stream in container.streams]
        selection = select_streams(container, cfg)
        notes.extend(selection.skipped)
        result = ProbeResult(
            source=spec.source_id,
            url=spec.url,
            container=container.format.name,
            container_long=container.format.long_name,
            duration=container.duration / AV_TIME_BASE if container.duration else None,
            start_time=container.start_time / AV_TIME_BASE if container.start_time else None,
            bit_rate=container.bit_rate or None,
            size_bytes=spec.path.stat().st_size if spec.path is not None else None,
            streams=streams,
            channels=ChosenChannels(
                video=selection.video.index if selection.video is not None else None,
                audio=selection.audio.index if selection.audio is not None else None,
                subtitles=[s.index for s in selection.subtitles],
            ),
            notes=notes,
        )
        if count_cues and spec.is_file:
            try:
                _count_cues(container, result.streams)
            except ReadError as exc:
                notes.append(f"cue count incomplete: {explain(exc.__cause__ or exc, spec)}")
    if result.channels.video is None and result.channels.audio is None:
        if not result.channels.subtitles:
            raise SourceError(spec.url, "no decodable video, audio or subtitles")
    stem = spec.path.stem if spec.path is not None else ""
    for path in sidecar_candidates(spec, cfg):
        info = SidecarInfo(path=str(path), format=path.suffix.lstrip(".").lower())
        info.language = sidecar_language(stem, path)
        try:
            cues = read_sidecar(
                path,
                spec.source_id,
                clean=CueCleaner(cfg.max_cue_chars),
                max_bytes=cfg.max_sidecar_bytes,
            )
            info.cues = len(cues)
        except (OSError, UnicodeDecodeError, pysubs2.Pysubs2Error, ValueError) as exc:
            info.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        result.sidecars.append(info)
    result.channels.sidecars = sum(1 for s in result.sidecars if s.error is None)
    return result
