"""One open connection to a source: open it, pick its streams, decode its packets.

Reconnects, loops and pacing live one level up (``decode.py``); this module sees a single
container from open to end and reports media times relative to the source start plus an
``offset`` chosen by its caller.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.error

from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.operators.audio_chunker import AudioChunker
from mmlm_stream.operators.clip_ring import ClipRing
from mmlm_stream.operators.frame_sampler import FrameSampler, output_size, to_rgb
from mmlm_stream.operators.guarded_io import GuardedOpener, HttpSettings, HttpStatusError
from mmlm_stream.operators.source import SourceSpec
from mmlm_stream.operators.subtitles import TEXT_SUBTITLE_CODECS, CueCleaner, find_sidecars
from mmlm_stream.records.channels import AudioChunk, ChannelItem, DecodeWarning, Frame, SubtitleCue
from mmlm_stream.security.url_policy import REFUSED, UrlRefused
from mmlm_stream.util.errors import SourceError
from mmlm_stream.util.redaction import redact_url

logger = logging.getLogger(__name__)

AV_TIME_BASE = 1_000_000
_DEFAULT_CUE_S = 3.0
# Timestamps that step back by more than this, or forward past every audio/video stream by
# more than ``decode.max_gap_s`` (live: JUMP_FORWARD_S at most), are a discontinuity (looped
# sender, restarted encoder, PTS wrap-around, corrupt timestamps): the stream's clock is
# re-based so media time continues monotonically, without a gap to fill.
JUMP_BACK_S = 0.5
JUMP_FORWARD_S = 30.0
# A file's first timestamp jumps each get a warning; further ones are only counted.
JUMP_WARNINGS = 3
# Frame period bounds: a corrupt frame rate must not move media time by hours per frame.
_PERIOD_S = (1e-3, 10.0)
SKIP_MARGIN_FRAMES = 3
"""Packets this many frame periods or less before the next sampled time, or after it, are
decoded whole, so timestamp rounding can never make the sampler miss its frame."""
SKIP_END_S = 1.0
"""Frames within this of a file's known end are all decoded: its last time is the video's."""


class ReadError(Exception):
    """Reading stopped before the end of the source (timeout, reset, corrupt data)."""


def explain(exc: BaseException, spec: SourceSpec, timeout_s: float | None = None) -> str:
    """A short human reason for an FFmpeg/OS error, without FFmpeg's noise."""
    if isinstance(exc, av.error.ExitError):
        return f"timed out after {timeout_s:g}s" if timeout_s else "timed out"
    if isinstance(exc, FileNotFoundError | av.error.FileNotFoundError):
        return "no such file" if spec.is_file else "not found"
    if isinstance(exc, HttpStatusError):
        return exc.strerror
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "HTTP 404 not found"
    if isinstance(exc, av.error.HTTPError):
        return f"HTTP error ({exc.strerror})"
    if isinstance(exc, av.error.ConnectionRefusedError | ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return f"unsupported protocol '{spec.scheme}'"
    if isinstance(exc, av.error.InvalidDataError):
        if (
            spec.is_file
            and spec.path is not None
            and spec.path.suffix.lower() in {".mp4", ".m4v", ".mov"}
        ):
            return "not a readable media file (corrupt, or an MP4 truncated before its index)"
        return "not a readable media file (unknown format or corrupt data)"
    if isinstance(exc, av.error.FFmpegError):
        if spec.is_file and exc.errno == errno.EBUSY and spec.path and spec.path.is_file():
            # What FFmpeg answers for a regular file whose stream parameters it refuses.
            return "not a readable media file (invalid stream parameters)"
        return exc.strerror or type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


PERMANENT_ERRORS = (
    av.error.HTTPNotFoundError,
    av.error.HTTPUnauthorizedError,
    av.error.HTTPForbiddenError,
    av.error.HTTPBadRequestError,
    av.error.ProtocolNotFoundError,
    av.error.DecoderNotFoundError,
    av.error.DemuxerNotFoundError,
)


def is_permanent(exc: BaseException) -> bool:
    """Whether an open error will be the same on the next attempt (4xx, unknown protocol or
    format): a live stream then fails instead of reconnecting every few seconds."""
    if isinstance(exc, HttpStatusError):
        return 400 <= exc.status < 500 and exc.status not in (408, 429)
    return isinstance(exc, PERMANENT_ERRORS)


def open_container(spec: SourceSpec, config: DecodeConfig) -> av.container.InputContainer:
    """Open with FFmpeg timeouts so a dead or stalling URL cannot hang us; a source with a
    policy is checked first and opened under it (``_guarded``)."""
    options: dict[str, str] = {}
    if spec.scheme in {"rtsp", "rtsps"}:
        options["rtsp_transport"] = "tcp"
    url, io_open = spec.url, None
    try:
        if spec.policy is not None:
            url, io_open = _guarded(spec, config, options)
        _check_file(spec)
        return av.open(
            url,
            options=options,
            timeout=(config.open_timeout_s, config.stall_timeout_s),
            io_open=io_open,
        )
    except UrlRefused as exc:
        logger.warning("%s: %s", spec.source_id, exc.logged)
        raise SourceError(spec.url, REFUSED, permanent=True) from exc
    except SourceError:
        raise
    except Exception as exc:  # FFmpeg raises many OSError subclasses; all mean "cannot open"
        reason = explain(exc, spec, config.open_timeout_s)
        permanent = is_permanent(exc)
        if spec.policy is not None and not spec.is_file:
            # An API caller learns only that it failed: distinct reasons would map the network.
            logger.warning("%s: cannot open %s: %s", spec.source_id, redact_url(url), reason)
            reason = UNTRUSTED_OPEN_ERROR
        raise SourceError(spec.url, reason, permanent=permanent) from exc


def _check_file(spec: SourceSpec) -> None:
    if spec.is_file and spec.path is not None:
        if spec.path.is_dir():
            raise SourceError(spec.url, "is a directory, not a media file")
        if not spec.path.exists():
            raise SourceError(spec.url, "no such file")
        if spec.path.stat().st_size == 0:
            raise SourceError(spec.url, "empty file (0 bytes)")


UNTRUSTED_OPEN_ERROR = "the source could not be opened (the service log has the details)"


def _guarded(
    spec: SourceSpec, config: DecodeConfig, options: dict[str, str]
) -> tuple[str, GuardedOpener | None]:
    """What FFmpeg opens for a source under a policy, and its ``io_open``.

    HTTP(S) and local files: every open (redirects, HLS playlists, segments and keys,
    files a playlist names) goes through ``GuardedOpener``. Other schemes (RTSP, RTMP, SRT,
    TCP, UDP) open one connection, made by FFmpeg to the address the policy checked, with
    no URL options but harmless ones. Either way FFmpeg may use only the protocols the
    scheme needs (never file, concat, subfile, data, pipe)."""
    policy = spec.policy
    assert policy is not None
    settings = HttpSettings(config.open_timeout_s, config.stall_timeout_s, policy.verify_tls)
    options["http_persistent"] = "0"
    if spec.is_file:
        policy.check_local(spec.url)
        options["protocol_whitelist"] = "file"
        return spec.url, GuardedOpener(policy, settings, local=True)
    target = policy.check(spec.url)
    options["protocol_whitelist"] = policy.protocols(target.scheme) or target.scheme
    if target.scheme in ("http", "https"):
        return spec.url, GuardedOpener(policy, settings, local=False)
    return target.pinned_url, None


def _decodable(stream: av.stream.Stream) -> bool:
    ctx = stream.codec_context
    return ctx is not None and ctx.name not in (None, "", "none")


def _language(stream: av.stream.Stream) -> str | None:
    lang = stream.metadata.get("language")
    return None if lang in (None, "", "und") else lang


@dataclass
class Selection:
    """The streams of a container that become channels."""

    video: av.video.stream.VideoStream | None
    audio: av.audio.stream.AudioStream | None
    subtitles: list[av.subtitles.stream.SubtitleStream] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    oversized: list[str] = field(default_factory=list)
    """Video streams left out for claiming more than ``decode.max_pixels``."""

    @property
    def streams(self) -> list[av.stream.Stream]:
        chosen = [self.video, self.audio, *self.subtitles]
        return [stream for stream in chosen if stream is not None]


def select_streams(container: av.container.InputContainer, config: DecodeConfig) -> Selection:
    """Best video (largest within ``max_pixels``, not cover art), first or configured audio,
    all text subtitles."""
    skipped: list[str] = []
    oversized: list[str] = []
    videos = []
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        if not _decodable(stream):
            skipped.append(f"video stream {stream.index}: unknown codec")
            continue
        if stream.width * stream.height > config.max_pixels:
            oversized.append(
                f"video stream {stream.index} is {stream.width}x{stream.height}, over "
                f"decode.max_pixels ({config.max_pixels})"
            )
            continue
        videos.append(stream)
    video = max(videos, key=lambda s: (s.width * s.height, -s.index), default=None)

    audios = []
    for stream in container.streams.audio:
        if _decodable(stream):
            audios.append(stream)
        else:
            skipped.append(f"audio stream {stream.index}: unknown codec")
    audio = None
    if config.audio_language:
        audio = next((s for s in audios if _language(s) == config.audio_language), None)
    if audio is None and config.audio_stream is not None:
        if config.audio_stream >= len(audios):
            skipped.append(f"audio_stream {config.audio_stream} absent ({len(audios)} tracks)")
        else:
            audio = audios[config.audio_stream]
    if audio is None and audios:
        audio = audios[0]

    subtitles = []
    if config.subtitles:
        for stream in container.streams.subtitles:
            name = stream.codec_context.name if stream.codec_context is not None else "none"
            if name in TEXT_SUBTITLE_CODECS:
                subtitles.append(stream)
            else:
                skipped.append(f"subtitle stream {stream.index}: {name} is not text")
    return Selection(video, audio, subtitles, skipped + oversized, oversized)


class ContainerDecoder:
    """Decodes one opened container into channel items, packet by packet.

    ``packets()`` yields a (possibly empty) list of items per demuxed packet so the caller
    can re-check ``watermark`` often; items within a list are in decode order, not yet in
    time order across channels.
    """

    def __init__(
        self,
        source: str,
        container: av.container.InputContainer,
        selection: Selection,
        config: DecodeConfig,
        sampler: FrameSampler,
        chunker: AudioChunker | None,
        offset: float = 0.0,
        live: bool = False,
        url: str | None = None,
        clips: ClipRing | None = None,
    ) -> None:
        self.source = source
        self.url = url or source
        self.clips = clips
        self.container = container
        self.selection = selection
        self.config = config
        self.sampler = sampler
        self.chunker = chunker
        self.offset = offset
        self.live = live
        self.max_gap_s = min(config.max_gap_s, JUMP_FORWARD_S) if live else config.max_gap_s
        self.clean = CueCleaner(config.max_cue_chars)
        self._shift: dict[int, float] = {}
        self._last_raw: dict[int, float] = {}
        self._frontier: float | None = None  # latest raw time of any audio/video stream
        self.discontinuities = 0
        start = container.start_time
        self._base = start / AV_TIME_BASE if start is not None else None
        self._video_progress: float | None = None
        self._video_done = selection.video is None
        self._audio_done = selection.audio is None or chunker is None
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.bad_packets = 0
        self.bytes_read = 0
        self.last_time: float | None = None
        self.reached: float | None = None
        """Latest media time of any item (subtitles too), for ``jobs.max_duration_s``."""
        self.video_end: float | None = None
        self._skip = "DEFAULT"
        self._duration = self.duration
        self._warnings: list[DecodeWarning] = []
        if selection.video is not None:
            video = selection.video
            self._size = output_size(
                video.width, video.height, config.frame_short_side, config.frame_size
            )
            rate = video.average_rate or video.guessed_rate
            period = 1.0 / float(rate) if rate else 0.04
            self._frame_period = min(max(period, _PERIOD_S[0]), _PERIOD_S[1])
            # The header's size was checked; FFmpeg refuses pictures the bitstream makes
            # larger, so a lying header cannot allocate a huge frame either.
            video.codec_context.options = {
                **video.codec_context.options,
                "max_pixels": str(config.max_pixels),
            }

    @property
    def watermark(self) -> float | None:
        """Media time every still-open audio/video channel has reached (None: all done)."""
        marks = []
        if not self._video_done:
            marks.append(self._video_progress if self._video_progress is not None else -1.0)
        if not self._audio_done and self.chunker is not None:
            pending = self.chunker.pending_start
            marks.append(pending if pending is not None else -1.0)
        return min(marks) if marks else None

    def _packet_time(self, packet: av.Packet) -> float | None:
        """A packet's media time by the clock its stream's frames follow (for clips)."""
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None or self._base is None:
            return None
        raw = float(ts * packet.time_base) - self._base + self._shift.get(packet.stream.index, 0.0)
        return max(0.0, raw) + self.offset

    def _media_time(
        self, stream: av.stream.Stream, seconds: float | None, step: float
    ) -> float | None:
        """Packet time to media time; ``step`` is where the stream continues after a jump.

        Back by more than JUMP_BACK_S from the stream's own last time, or forward by more
        than ``max_gap_s`` past every audio/video stream (so a subtitle stream's own long
        pauses are not jumps), is a discontinuity: the stream's clock is shifted to go on
        from there. So is a stream whose first time lies that far before the others.
        """
        if seconds is None:
            return None
        if self._base is None:
            self._base = seconds
        index = stream.index
        raw = seconds - self._base + self._shift.get(index, 0.0)
        own = self._last_raw.get(index)
        ahead = self._frontier
        av_stream = stream.type != "subtitle"
        resume: float | None = None
        if own is not None and raw - own < -JUMP_BACK_S:
            jump, resume = raw - own, own + step
        elif ahead is not None and raw - ahead > self.max_gap_s:
            jump = raw - ahead
            resume = (own if own is not None and av_stream else ahead) + step
        elif own is None and ahead is not None and raw < ahead - self.max_gap_s:
            jump, resume = raw - ahead, ahead
        if resume is not None:
            self._jumped(stream, jump, resume)
            self._shift[index] = self._shift.get(index, 0.0) + resume - raw
            raw = resume
        self._last_raw[index] = raw
        if av_stream:
            self._frontier = raw if ahead is None else max(ahead, raw)
        return max(0.0, raw) + self.offset

    def _jumped(self, stream: av.stream.Stream, jump: float, resume: float) -> None:
        self.discontinuities += 1
        at = max(0.0, resume) + self.offset
        logger.info("%s: timestamp jump of %.2fs on stream %d", self.source, jump, stream.index)
        if not self.live and self.discontinuities <= JUMP_WARNINGS:
            self._warnings.append(
                DecodeWarning(
                    self.source,
                    at,
                    f"{self.url}: timestamps of {stream.type} stream {stream.index} jump "
                    f"{jump:+.2f}s at {at:.2f}s; media time goes on from there",
                )
            )

    def packets(self) -> Iterator[list[ChannelItem]]:
        streams = self.selection.streams
        if not streams:
            return
        try:
            for packet in self.container.demux(*streams):
                yield self._handle(packet)
        except (av.error.FFmpegError, OSError) as exc:
            raise ReadError(exc) from exc

    def cues_ahead(self) -> Iterator[SubtitleCue]:
        """The cues of the selected subtitle streams, demuxing every selected stream but
        decoding only subtitles: audio and video packets only advance the media clock (their
        decode timestamps stand in for frame times), for ``read_embedded_cues``."""
        for packet in self.container.demux(*self.selection.streams):
            if packet.stream.type == "subtitle":
                for item in self._subtitle(packet):
                    assert isinstance(item, SubtitleCue)
                    yield item
            elif packet.dts is not None:
                step = float(packet.duration * packet.time_base) if packet.duration else 0.0
                self._media_time(packet.stream, float(packet.dts * packet.time_base), step)

    def finish(self) -> list[ChannelItem]:
        """Flush buffered audio at the end of this container."""
        self._video_done = True
        self._audio_done = True
        return list(self.chunker.flush()) if self.chunker is not None else []

    def _handle(self, packet: av.Packet) -> list[ChannelItem]:
        kind = packet.stream.type
        self.bytes_read += packet.size
        items: list[ChannelItem] = []
        try:
            if kind == "video":
                items = self._video(packet)
            elif kind == "audio":
                items = self._audio(packet)
            elif kind == "subtitle":
                items = self._subtitle(packet)
        except av.error.InvalidDataError:
            self.bad_packets += 1
        if self.clips is not None and kind in ("video", "audio"):
            time = self._packet_time(packet)
            if time is not None:
                self.clips.add(packet, time)
        if self._warnings:
            items.extend(self._warnings)
            self._warnings.clear()
        return items

    def _skip_unwanted(self, packet: av.Packet) -> None:
        """Skip decoding frames no other frame refers to (B-frames) while the next sampled
        time is still ahead: each would be a picture the sampler drops, and they are most of
        a B-frame stream's frames. Reference frames are always decoded, and so is every
        frame from just before the target on, so which frame is sampled does not change."""
        target = self.sampler.next_target
        skip = "DEFAULT"
        if target is not None and packet.pts is not None and self._base is not None:
            raw = float(packet.pts * packet.time_base) - self._base
            at = raw + self._shift.get(packet.stream.index, 0.0) + self.offset
            end = self._duration
            before_end = end is None or self.live or raw < end - SKIP_END_S
            if before_end and at < target - SKIP_MARGIN_FRAMES * self._frame_period:
                skip = "NONREF"
        context = packet.stream.codec_context
        if self._skip != skip:
            context.skip_frame = skip
            self._skip = skip

    def _video(self, packet: av.Packet) -> list[ChannelItem]:
        items: list[ChannelItem] = []
        self._skip_unwanted(packet)
        frames = packet.decode()
        if packet.size == 0 and packet.dts is None:
            self._video_done = True
        for frame in frames:
            time = self._media_time(packet.stream, frame.time, self._frame_period)
            if time is None:
                if self._video_progress is None:
                    continue
                time = self._video_progress + self._frame_period
            self.frames_decoded += 1
            self._video_progress = time
            self.video_end = time + self._frame_period
            self._note(self.video_end)
            if not self.sampler.wants(time):
                continue
            image = to_rgb(frame, self._size, self.config.frame_interpolation)
            items.append(Frame(self.source, time, image, self.frames_sampled))
            self.frames_sampled += 1
        return items

    def _audio(self, packet: av.Packet) -> list[ChannelItem]:
        assert self.chunker is not None
        items: list[AudioChunk] = []
        for frame in packet.decode():
            step = frame.samples / frame.sample_rate if frame.sample_rate else 0.0
            time = self._media_time(packet.stream, frame.time, step)
            items.extend(self.chunker.push(frame, time))
        if packet.size == 0 and packet.dts is None:
            # End of the audio stream: its last, shorter chunk must leave now, or the
            # watermark (no longer held by audio) would let later frames overtake it.
            self._audio_done = True
            items.extend(self.chunker.flush())
        if items:
            self._note(items[-1].end)
        return items

    def _subtitle(self, packet: av.Packet) -> list[ChannelItem]:
        if packet.pts is None or packet.size == 0:
            return []
        tb = packet.time_base
        start = self._media_time(packet.stream, float(packet.pts * tb), 0.0)
        assert start is not None
        text = _cue_text(packet, self.clean)
        if not text:
            return []
        self.reached = start if self.reached is None else max(self.reached, start)
        return [_cue(self.source, packet, start, text)]

    def _note(self, time: float) -> None:
        if self.last_time is None or time > self.last_time:
            self.last_time = time
        if self.reached is None or time > self.reached:
            self.reached = time

    @property
    def duration(self) -> float | None:
        duration = self.container.duration
        return duration / AV_TIME_BASE if duration else None


def _cue_text(packet: av.Packet, clean: CueCleaner) -> str:
    """Plain text of one subtitle packet; empty for a packet that only clears the screen."""
    texts = []
    for sub in packet.decode():
        raw = getattr(sub, "dialogue", None) or getattr(sub, "text", b"")
        text = clean(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
        if text:
            texts.append(text)
    return "\n".join(texts)


def _cue(source: str, packet: av.Packet, start: float, text: str) -> SubtitleCue:
    duration = float(packet.duration * packet.time_base) if packet.duration else 0.0
    return SubtitleCue(
        source=source,
        start=start,
        end=start + (duration if duration > 0 else _DEFAULT_CUE_S),
        text=text,
        language=_language(packet.stream),
        track=f"stream:{packet.stream.index}",
    )


# Memory a read-ahead cue costs besides its text (object, strings, list slot), in bytes.
_CUE_OVERHEAD_BYTES = 256


def read_embedded_cues(
    spec: SourceSpec, config: DecodeConfig, clean: CueCleaner
) -> list[SubtitleCue] | None:
    """Every cue of a local file's text subtitle streams, read in a pass before decoding.

    Why: a container may store a subtitle packet behind audio and video that come seconds
    (or minutes) later: FFmpeg's muxer writes a sparse stream's packet when it gets it, so a
    cue muxed late sits behind later frames, and MKV and MP4 allow that. Decoded in file
    order, such a cue reached the windows it overlaps after they had closed, and was dropped.
    Read first, the cues merge into the time-ordered stream like a sidecar's.

    The pass reads every packet but decodes only the subtitles: audio and video packets only
    move the clock, through the same ``ContainerDecoder._media_time`` as the decoding pass,
    so a cue gets the time that pass would give it, timestamp jumps included (about 13 us a
    packet: 0.1 s for two minutes of 720p, some 6 s for a two-hour film). None, and the
    decoding pass reads the cues in place as before: no text subtitle stream, more cue text
    than ``decode.max_sidecar_bytes`` (the bound a sidecar file has), or a read error.
    """
    try:
        container = open_container(spec, config)
    except SourceError:
        return None
    with container:
        selection = select_streams(container, config)
        if not selection.subtitles:
            return None
        clock = ContainerDecoder(
            spec.source_id, container, selection, config, FrameSampler(0), None, url=spec.url
        )
        clock.clean = clean
        cues: list[SubtitleCue] = []
        size = 0
        try:
            for cue in clock.cues_ahead():
                size += len(cue.text.encode()) + _CUE_OVERHEAD_BYTES
                if size > config.max_sidecar_bytes:
                    return None
                cues.append(cue)
        except (av.error.FFmpegError, OSError):
            return None
    cues.sort(key=lambda cue: (cue.start, cue.end))
    return cues


def sidecar_candidates(spec: SourceSpec, config: DecodeConfig) -> list[Path]:
    """Sidecars next to a file plus files configured explicitly."""
    found = find_sidecars(spec.path) if spec.path is not None and config.sidecar_subtitles else []
    for extra in config.subtitle_files:
        if extra not in found:
            found.append(extra)
    return found
