"""Decode any source (file or live URL) into one time-ordered stream of channel items.

This is the decoding operator: frames (sampled by PTS, downscaled at decode time), 16 kHz
mono audio chunks, subtitle cues (embedded and sidecar), stream-state items for live
sources and warnings for partial input. It never holds more than a bounded reorder
buffer, whatever the length of the source.
"""

from __future__ import annotations

import logging
import threading
import time as _time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import pysubs2

from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.jobs import JobsConfig
from mmlm_stream.operators.audio_chunker import AudioChunker
from mmlm_stream.operators.clip_ring import ClipRing
from mmlm_stream.operators.container import (
    JUMP_WARNINGS,
    ContainerDecoder,
    ReadError,
    explain,
    open_container,
    read_embedded_cues,
    select_streams,
    sidecar_candidates,
)
from mmlm_stream.operators.frame_sampler import FrameSampler
from mmlm_stream.operators.source import SourceSpec, resolve_source
from mmlm_stream.operators.subtitles import (
    CueCleaner,
    SidecarTooLarge,
    read_sidecar,
    sidecar_language,
)
from mmlm_stream.operators.time_order import TimeOrderer
from mmlm_stream.records.channels import (
    AudioChunk,
    ChannelItem,
    DecodeWarning,
    Frame,
    StreamState,
    StreamStatus,
    SubtitleCue,
)
from mmlm_stream.util.backoff import Backoff
from mmlm_stream.util.errors import SourceError

logger = logging.getLogger(__name__)

# A file that stops this far short of its declared duration is reported as truncated.
TRUNCATION_SLACK_S = 1.0


@dataclass
class DecodeStats:
    """Counts of what a decode produced, for summaries and metrics."""

    frames: int = 0
    audio_chunks: int = 0
    audio_samples: int = 0
    cues: int = 0
    warnings: int = 0
    reconnects: int = 0
    first_time: float | None = None
    last_time: float | None = None

    def count(self, item: ChannelItem) -> None:
        if isinstance(item, Frame):
            self.frames += 1
        elif isinstance(item, AudioChunk):
            self.audio_chunks += 1
            self.audio_samples += len(item.samples)
        elif isinstance(item, SubtitleCue):
            self.cues += 1
        elif isinstance(item, DecodeWarning):
            self.warnings += 1
        if isinstance(item, Frame | AudioChunk):
            end = item.end if isinstance(item, AudioChunk) else item.time
            self.first_time = item.sort_time if self.first_time is None else self.first_time
            self.last_time = end if self.last_time is None else max(self.last_time, end)


class SourceDecoder:
    """Iterates a source's channel items; reconnects live sources, loops and paces files.

    Live sources (by URL scheme, ``live: true`` or ``loop: true``) emit ``StreamStatus``
    items on every state transition and never raise on a dropped connection: they back off
    (exponentially, with jitter) and come back, their media time continuing monotonically
    from where it stopped plus the wall time of the outage. A file that cannot be opened
    raises ``SourceError``; one that breaks part-way yields what it could, then a warning.
    ``limits`` (batch inputs) bound a source that is not live: past them it raises
    ``SourceError``, so an endless HTTP stream cannot hold a job forever.
    """

    def __init__(
        self,
        spec: SourceSpec,
        config: DecodeConfig | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = _time.monotonic,
        limits: JobsConfig | None = None,
        clips: ClipRing | None = None,
    ) -> None:
        self.spec = spec
        self.config = config or DecodeConfig()
        self.stop = stop or threading.Event()
        self.clock = clock
        self.stats = DecodeStats()
        self.live = (
            self.config.live
            if self.config.live is not None
            else spec.live_by_scheme or self.config.loop
        )
        self.limits = None if self.live else limits
        self.clips = clips if self.live else None
        self._pace_origin: float | None = None
        self._state: StreamState | None = None
        self._cues_end = 0.0  # where the last embedded cue read ahead ends

    def __iter__(self) -> Iterator[ChannelItem]:
        for item in self._run():
            self.stats.count(item)
            yield item

    def _run(self) -> Iterator[ChannelItem]:
        spec, cfg = self.spec, self.config
        if self.limits is not None:
            check_size(spec, self.limits)
        sidecars, warnings = self._load_sidecars()
        yield from warnings
        # A file's embedded cues, read ahead (``read_embedded_cues``); None: decoded in place.
        embedded: list[SubtitleCue] | None = None
        rc = cfg.reconnect
        backoff = Backoff(rc.initial_s, rc.max_s, rc.factor, rc.jitter)
        sampler = FrameSampler(cfg.frame_fps)
        orderer = TimeOrderer(cfg.reorder_limit)
        chunker: AudioChunker | None = None
        offset = 0.0
        last_time: float | None = None
        last_wall = self.clock()
        failures = 0
        opened_once = False
        streaming_since: float | None = None
        if self.live:
            yield self._status(StreamState.CONNECTING, 0.0)
        while not self.stop.is_set():
            try:
                container = open_container(spec, cfg)
            except SourceError as exc:
                if not self.live or (spec.is_file and not opened_once):
                    raise
                if exc.permanent:
                    yield self._status(StreamState.FAILED, last_time or 0.0, exc.reason, failures)
                    return
                failures += 1
                logger.info("%s: connect attempt %d failed: %s", spec.source_id, failures, exc)
                if rc.max_attempts is not None and failures > rc.max_attempts:
                    yield self._status(StreamState.FAILED, last_time or 0.0, exc.reason, failures)
                    return
                self.stop.wait(backoff.next_delay())
                continue
            with container:
                selection = select_streams(container, cfg)
                if selection.video is None and selection.oversized:
                    # Audio alone would pass for the whole source: say why instead.
                    if not self.live:
                        raise SourceError(spec.url, selection.oversized[0], permanent=True)
                    yield self._status(
                        StreamState.FAILED, last_time or 0.0, selection.oversized[0], failures
                    )
                    return
                if selection.video is None and selection.audio is None and not selection.subtitles:
                    why = "; ".join(selection.skipped) or "the container has no streams"
                    reason = f"no decodable video, audio or subtitles ({why})"
                    if not self.live:
                        raise SourceError(spec.url, reason, permanent=True)
                    yield self._status(StreamState.FAILED, last_time or 0.0, reason, failures)
                    return
                if not opened_once:
                    for reason in selection.skipped:
                        yield DecodeWarning(spec.source_id, 0.0, f"{spec.url}: {reason} (skipped)")
                    if selection.subtitles and spec.is_file and (cfg.loop or not self.live):
                        embedded, warnings = self._load_embedded()
                        yield from warnings
                elif last_time is not None:
                    offset = last_time + max(0.0, self.clock() - last_wall)
                if selection.audio is not None:
                    if chunker is None:
                        chunker = AudioChunker(
                            spec.source_id, cfg.audio_chunk_s, max_fill_s=cfg.max_gap_s
                        )
                    elif opened_once:
                        chunker.restart_at(offset)
                opened_once = True
                if self.clips is not None:
                    self.clips.start_session()
                session = ContainerDecoder(
                    spec.source_id,
                    container,
                    selection if embedded is None else replace(selection, subtitles=[]),
                    cfg,
                    sampler,
                    chunker,
                    offset,
                    self.live,
                    url=spec.url,
                    clips=self.clips,
                )
                ahead = sorted([*sidecars, *(embedded or [])], key=lambda c: (c.start, c.end))
                cues = deque(replace(c, start=c.start + offset, end=c.end + offset) for c in ahead)
                error: str | None = None
                try:
                    for items in session.packets():
                        if self.live and self._state is not StreamState.STREAMING:
                            yield self._status(StreamState.STREAMING, session.offset)
                            streaming_since = self.clock()
                            failures = 0
                        orderer.push(items)
                        yield from self._release(orderer.pop_ready(session.watermark), cues)
                        if self.limits is not None:
                            self._check_limits(session, self.limits)
                        if self.stop.is_set():
                            break
                except ReadError as exc:
                    error = explain(exc.__cause__ or exc, spec, cfg.stall_timeout_s)
                orderer.push(session.finish())
                if self.clips is not None:
                    self.clips.end_session()  # while the container's streams still exist
                yield from self._release(orderer.drain(), cues)
                yield from cues
                last_time = session.last_time if session.last_time is not None else last_time
                last_wall = self.clock()
                if not self.live or (spec.is_file and cfg.loop and error is None):
                    yield from self._file_warnings(session, error)
            if self.stop.is_set():
                break
            if spec.is_file and cfg.loop and error is None:
                offset = session.last_time if session.last_time is not None else offset
                if chunker is not None:
                    chunker.restart_at(offset)
                continue
            if not self.live:
                return
            self.stats.reconnects += 1
            if streaming_since is not None and self.clock() - streaming_since >= rc.stable_s:
                backoff.reset()  # a flapping source keeps backing off (damped)
            streaming_since = None
            reason = error or "stream ended"
            yield self._status(StreamState.RECONNECTING, last_time or 0.0, reason)
            self.stop.wait(backoff.next_delay())
        if self.live:
            yield self._status(StreamState.ENDED, last_time or 0.0, "stopped")

    def _file_warnings(
        self, session: ContainerDecoder, error: str | None
    ) -> Iterator[DecodeWarning]:
        sid, url = self.spec.source_id, self.spec.url
        at = session.last_time or 0.0
        if error is not None:
            yield DecodeWarning(sid, at, f"{url}: reading stopped at {at:.2f}s: {error}")
        elif (
            session.duration
            and at < session.duration - TRUNCATION_SLACK_S
            and not self.stop.is_set()
            and not session.discontinuities  # the declared duration spans the jumps
            and self._cues_end < session.duration - TRUNCATION_SLACK_S  # or a late cue
        ):
            yield DecodeWarning(
                sid, at, f"{url}: data ends at {at:.2f}s of {session.duration:.2f}s (truncated?)"
            )
        if session.bad_packets:
            yield DecodeWarning(sid, at, f"{url}: skipped {session.bad_packets} corrupt packets")
        if session.discontinuities > JUMP_WARNINGS:
            more = session.discontinuities - JUMP_WARNINGS
            yield DecodeWarning(sid, at, f"{url}: timestamps jumped {more} more times")
        if session.clean.truncated:
            yield DecodeWarning(
                sid,
                at,
                f"{url}: cut {session.clean.truncated} subtitle cues to "
                f"decode.max_cue_chars ({self.config.max_cue_chars})",
            )

    def _check_limits(self, session: ContainerDecoder, limits: JobsConfig) -> None:
        """Past ``jobs.max_duration_s`` of media or ``jobs.max_bytes`` of packets, the input
        fails: the bytes bound a network input that ``check_size`` could not."""
        reached = (session.reached or 0.0) - session.offset
        if reached > limits.max_duration_s:
            raise SourceError(
                self.spec.url,
                f"longer than jobs.max_duration_s ({limits.max_duration_s:g}s of media); "
                f"stopped at {reached:.1f}s",
                permanent=True,
            )
        if session.bytes_read > limits.max_bytes:
            raise SourceError(
                self.spec.url,
                f"more than jobs.max_bytes ({limits.max_bytes} bytes) of media; stopped",
                permanent=True,
            )

    def _load_sidecars(self) -> tuple[list[SubtitleCue], list[DecodeWarning]]:
        cues: list[SubtitleCue] = []
        warnings: list[DecodeWarning] = []
        if not self.config.subtitles:
            return cues, warnings
        stem = self.spec.path.stem if self.spec.path is not None else ""
        sid = self.spec.source_id
        clean = CueCleaner(self.config.max_cue_chars)
        for path in sidecar_candidates(self.spec, self.config):
            try:
                cues.extend(
                    read_sidecar(
                        path,
                        sid,
                        sidecar_language(stem, path),
                        clean=clean,
                        max_bytes=self.config.max_sidecar_bytes,
                    )
                )
            except SidecarTooLarge as exc:
                warnings.append(DecodeWarning(sid, 0.0, f"{path}: subtitles skipped ({exc})"))
            except (OSError, UnicodeDecodeError, pysubs2.Pysubs2Error, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
                warnings.append(DecodeWarning(sid, 0.0, f"{path}: unreadable subtitles ({reason})"))
        if clean.truncated:
            warnings.append(
                DecodeWarning(
                    sid,
                    0.0,
                    f"{self.spec.url}: cut {clean.truncated} sidecar subtitle cues to "
                    f"decode.max_cue_chars ({self.config.max_cue_chars})",
                )
            )
        cues.sort(key=lambda cue: (cue.start, cue.end))
        return cues, warnings

    def _load_embedded(self) -> tuple[list[SubtitleCue] | None, list[DecodeWarning]]:
        clean = CueCleaner(self.config.max_cue_chars)
        cues = read_embedded_cues(self.spec, self.config, clean)
        self._cues_end = max((cue.end for cue in cues or ()), default=0.0)
        warnings = []
        if cues is not None and clean.truncated:
            warnings.append(
                DecodeWarning(
                    self.spec.source_id,
                    0.0,
                    f"{self.spec.url}: cut {clean.truncated} subtitle cues to "
                    f"decode.max_cue_chars ({self.config.max_cue_chars})",
                )
            )
        return cues, warnings

    def _release(
        self, items: Iterable[ChannelItem], cues: deque[SubtitleCue]
    ) -> Iterator[ChannelItem]:
        for item in items:
            while cues and cues[0].start <= item.sort_time:
                yield cues.popleft()
            self._pace(item.sort_time)
            yield item

    def _pace(self, media_time: float) -> None:
        if not self.config.realtime:
            return
        now = self.clock()
        if self._pace_origin is None:
            self._pace_origin = now - media_time
            return
        delay = self._pace_origin + media_time - now
        if delay > 0:
            self.stop.wait(delay)

    def _status(
        self, state: StreamState, media_time: float, reason: str | None = None, attempt: int = 0
    ) -> StreamStatus:
        self._state = state
        logger.info("%s: %s%s", self.spec.source_id, state.value, f" ({reason})" if reason else "")
        return StreamStatus(self.spec.source_id, state, media_time, reason=reason, attempt=attempt)


def check_size(spec: SourceSpec, limits: JobsConfig) -> None:
    """A local file over ``jobs.max_bytes`` fails before anything opens it."""
    if spec.path is None:
        return
    try:
        size = spec.path.stat().st_size
    except OSError:
        return  # opening it says why, in the usual words
    if size > limits.max_bytes:
        raise SourceError(
            spec.url,
            f"file is {size} bytes, over jobs.max_bytes ({limits.max_bytes})",
            permanent=True,
        )


def decode(
    target: str | SourceSpec,
    config: DecodeConfig | None = None,
    *,
    source_id: str | None = None,
    stop: threading.Event | None = None,
    limits: JobsConfig | None = None,
    clips: ClipRing | None = None,
) -> SourceDecoder:
    """Decode ``target`` (path or URL); iterate the result for time-ordered channel items.
    ``limits`` bound a batch input (a source that is not live); ``clips`` gets the encoded
    packets of a live source (``operators/clip_ring.py``)."""
    spec = target if isinstance(target, SourceSpec) else resolve_source(target, source_id)
    return SourceDecoder(spec, config, stop, limits=limits, clips=clips)
