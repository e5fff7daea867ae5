"""The analysis loop of one source: decode, batch per modality, encode, aggregate.

It is written against the ``Encoders`` interface, so the same loop runs with in-process
models (tests, ``train-fusion``, a single machine) and with Ray Serve deployments. Each
channel's watermark is the earliest media time it may still deliver: the decoder's output
is time-ordered, so a channel with nothing pending has caught up with the decoder.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from mmlm_stream.config import Config
from mmlm_stream.models.fusion_head import LoadedHead
from mmlm_stream.operators.backpressure import LiveQueue
from mmlm_stream.operators.clip_ring import ClipRing
from mmlm_stream.operators.decode import SourceDecoder, decode
from mmlm_stream.operators.source import SourceSpec
from mmlm_stream.operators.speech_language import LanguageHint
from mmlm_stream.operators.speech_segmenter import SpeechSegmenter
from mmlm_stream.pipeline.aggregate import Polled, SourceAggregator, WindowOutput
from mmlm_stream.pipeline.encoding import Encoders
from mmlm_stream.pipeline.live_clock import LiveClock
from mmlm_stream.pipeline.snapshots import Snapshots, SnapshotStore
from mmlm_stream.records.channels import (
    AudioChunk,
    ChannelItem,
    DecodeWarning,
    Frame,
    StreamState,
    StreamStatus,
    SubtitleCue,
)
from mmlm_stream.records.evidence import Evidence
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import SpeechInput, TranscriptSegment
from mmlm_stream.records.schema import EventRecord, utc_stamp
from mmlm_stream.records.stream_events import status_event
from mmlm_stream.rules.query_scoring import QueryScorer

logger = logging.getLogger(__name__)

WHISPER_WINDOW_S = 30.0
# A file's speech waits for a full batch at most this long (media seconds) before it is
# transcribed; a live source's goes at once, and so does a file's first utterance: every
# window waits for the speech under it, so holding the first one back would hold back the
# file's first window (on a short file, all of them) for one Whisper window saved.
MAX_SPEECH_DELAY_S = 20.0


@dataclass
class AnalysisResult:
    source: str
    windows: int = 0
    duration: float | None = None
    warnings: list[str] = field(default_factory=list)
    late_dropped: int = 0
    speech_dropped_s: float = 0.0
    models: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)


class Aggregation(Protocol):
    """What the loop needs of the per-source state holder (in process, or a deployment)."""

    def add(self, channel: Modality, items: Sequence[Evidence]) -> None: ...

    def advance(self, channel: Modality, media_time: float) -> None: ...

    def poll(self) -> Polled: ...

    def finish(self) -> tuple[list[WindowOutput], list[EventRecord]]: ...

    @property
    def late_dropped(self) -> int: ...

    def close(self) -> None:
        """Release the state holder (an actor, for a deployment) once the loop is done."""
        ...


class SourceAnalysis:
    """Runs one source to its end (or until ``stop``), handing each closed window on."""

    def __init__(
        self,
        spec: SourceSpec,
        config: Config,
        encoders: Encoders,
        *,
        on_window: Callable[[WindowOutput], None],
        on_events: Callable[[list[EventRecord]], None] | None = None,
        on_status: Callable[[StreamStatus], None] | None = None,
        on_progress: Callable[[float], None] | None = None,
        query_scorer: QueryScorer | None = None,
        head: LoadedHead | None = None,
        stop: threading.Event | None = None,
        aggregator: Callable[[bool, Callable[[float], datetime | None] | None], Aggregation]
        | None = None,
    ) -> None:
        self.spec = spec
        self.config = config
        self.encoders = encoders
        self.on_window = on_window
        self.on_events = on_events or (lambda events: None)
        self.on_status = on_status or (lambda status: None)
        self.on_progress = on_progress or (lambda media_time: None)
        self.stop = stop or threading.Event()
        store = SnapshotStore(config.snapshots)
        clips = ClipRing(config.clips, store.write_clip) if config.clips.enabled else None
        # jobs.* bound an input that is not live (a job's, describe's), never a live stream.
        self.decoder: SourceDecoder = decode(
            spec, config.decode, stop=self.stop, limits=config.jobs, clips=clips
        )
        if not self.decoder.live:
            clips = None  # a file is its own clip
        self.snapshots = (
            Snapshots(config.snapshots, store, clips)
            if config.snapshots.enabled or clips is not None
            else None
        )
        self.live_clock = LiveClock()
        wall_of = self.live_clock if self.decoder.live else None
        if aggregator is not None:
            self.aggregator: Aggregation = aggregator(self.decoder.live, wall_of)
        else:
            self.aggregator = SourceAggregator(
                spec.source_id,
                config,
                encoders.channels,
                embed_text=encoders.embed_text,
                query_scorer=query_scorer,
                head=head,
                model_ids=encoders.model_ids(),
                live=self.decoder.live,
                wall_of=wall_of,
            )
        self.segmenter = SpeechSegmenter()
        self.frames: list[Frame] = []
        self.chunks: list[AudioChunk] = []
        self.speech: list[SpeechInput] = []
        # Whisper runs beside the loop, so frames and audio (and their events) never wait
        # for it; results go to the aggregator in order: (first start, pending transcripts).
        self.transcribing: deque[tuple[float, Future[list[TranscriptSegment]]]] = deque()
        self._speech_pool = ThreadPoolExecutor(1, thread_name_prefix=f"speech:{spec.source_id}")
        self._speech_seconds: dict[Future[list[TranscriptSegment]], float] = {}
        self._speech_batches = 0
        self._language = LanguageHint()
        self._open_walls: dict[str, str] = {}  # event id -> wall_start of its open version
        self.progress = 0.0
        self.queue: LiveQueue | None = None
        self._producer_error: Exception | None = None
        self.result = AnalysisResult(spec.source_id, models=encoders.model_ids())

    def run(self) -> AnalysisResult:
        try:
            return self._run()
        finally:
            self._speech_pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> AnalysisResult:
        models = self.config.models
        items = self._live_items() if self.decoder.live else iter(self.decoder)
        for item in items:
            if isinstance(item, Frame):
                self.frames.append(item)
                if len(self.frames) >= models.visual.batch_size or self.decoder.live:
                    self._flush_frames()
            elif isinstance(item, AudioChunk):
                self.chunks.append(item)
                if len(self.chunks) >= models.audio.batch_size or self.decoder.live:
                    self._flush_audio()
            elif isinstance(item, SubtitleCue):
                self.aggregator.add(Modality.SUBTITLES, [item])
            elif isinstance(item, DecodeWarning):
                logger.warning("%s", item.reason)
                self.result.warnings.append(item.reason)
            elif isinstance(item, StreamStatus):
                self.on_status(item)
                self.on_events([status_event(item)])
            self.progress = max(self.progress, item.sort_time)
            self._collect_speech(wait=False)
            self._advance()
            polled = self.aggregator.poll()
            if polled.events:
                self.on_events(self._with_snapshots(self._stamp_events(polled.events)))
            self._emit(polled.windows)
            self.on_progress(self.progress)
        self._flush_frames()
        self._flush_audio()
        self._flush_speech(force=True)
        outputs, closing = self.aggregator.finish()
        self._emit(outputs)
        if closing:
            self.on_events(self._with_snapshots(self._stamp_events(closing)))
        stats = self.decoder.stats
        self.result.duration = stats.last_time
        self.result.late_dropped = self.aggregator.late_dropped
        return self.result

    def _live_items(self) -> Iterator[ChannelItem]:
        """Decode in a thread into bounded queues, so slow encoders never stall the source:
        frames follow the configured policy, audio is never dropped (module backpressure)."""
        live = self.config.live
        queue = LiveQueue(live.max_queued_frames, live.max_queued_items, live.frame_policy)
        self.queue = queue

        def produce() -> None:
            try:
                for item in self.decoder:
                    if isinstance(item, StreamStatus):
                        if item.state is StreamState.STREAMING:
                            self.live_clock.set(item)
                    else:
                        self.live_clock.observe(item.sort_time)
                    queue.put(item)
            except Exception as exc:  # the consumer re-raises it in its own thread
                self._producer_error = exc
            finally:
                queue.close()

        thread = threading.Thread(target=produce, name=f"decode:{self.spec.source_id}", daemon=True)
        thread.start()
        while (item := queue.get()) is not None:
            yield item
        thread.join()
        if self._producer_error is not None:
            raise self._producer_error

    def lag_s(self) -> float | None:
        """Wall time between now and the media time analysed last (live sources)."""
        wall = self.live_clock(self.progress)
        if wall is None:
            return None
        return max(0.0, (datetime.now(UTC) - wall).total_seconds())

    def _stamp_events(self, events: list[EventRecord]) -> list[EventRecord]:
        """Wall times of live events. A closing version keeps the ``wall_start`` of its open
        version: after a reconnect the clock maps media time anew, and a different stamp
        would make the bus take the closing for another event."""
        for event in events:
            if event.wall_start is None:
                if event.id in self._open_walls:
                    event.wall_start = self._open_walls[event.id]
                elif (wall := self.live_clock(event.start)) is not None:
                    event.wall_start = utc_stamp(wall)
            if event.ongoing and event.wall_start is not None:
                self._open_walls[event.id] = event.wall_start
            elif not event.ongoing:
                self._open_walls.pop(event.id, None)
        return events

    def _with_snapshots(self, events: list[EventRecord]) -> list[EventRecord]:
        if self.snapshots is not None and events:
            self.snapshots.attach(events)
        return events

    def _emit(self, outputs: list[WindowOutput]) -> None:
        for output in outputs:
            self.result.windows += 1
            window = output.window
            if window.wall_start is None and (wall := self.live_clock(window.start)) is not None:
                window.wall_start = utc_stamp(wall)
            self._with_snapshots(self._stamp_events(output.events))
            self.on_window(output)

    def _advance(self) -> None:
        frames_mark = self.frames[0].time if self.frames else self.progress
        audio_mark = self.chunks[0].start if self.chunks else self.progress
        speech_marks = [audio_mark]
        if self.segmenter.pending_start is not None:
            speech_marks.append(self.segmenter.pending_start)
        if self.speech:
            speech_marks.append(self.speech[0].start)
        if self.transcribing:
            speech_marks.append(self.transcribing[0][0])
        marks = {
            Modality.VISUAL: frames_mark,
            Modality.OBJECTS: frames_mark,
            Modality.OCR: frames_mark,
            Modality.AUDIO: audio_mark,
            Modality.SPEECH: min(speech_marks),
            Modality.SUBTITLES: self.progress,
        }
        for channel in self.encoders.channels:
            self.aggregator.advance(channel, marks[channel])

    def _flush_frames(self) -> None:
        if not self.frames:
            return
        batch, self.frames = self.frames, []
        results = self.encoders.encode_frames(batch)
        if self.snapshots is not None:
            self.snapshots.remember(batch, results.detections)
        self.aggregator.add(Modality.VISUAL, results.encodings)
        if Modality.OBJECTS in self.encoders.channels:
            self.aggregator.add(Modality.OBJECTS, results.detections)
        if Modality.OCR in self.encoders.channels:
            self.aggregator.add(Modality.OCR, results.ocr)

    def _flush_audio(self) -> None:
        if not self.chunks:
            return
        batch, self.chunks = self.chunks, []
        encodings = self.encoders.encode_audio(batch)
        self.aggregator.add(Modality.AUDIO, encodings)
        for chunk, encoding in zip(batch, encodings, strict=True):
            self.speech.extend(self.segmenter.push(chunk, encoding))
        self._flush_speech(force=False)

    def _flush_speech(self, force: bool) -> None:
        if force:
            self.speech.extend(self.segmenter.flush())
        if not self.speech:
            self._collect_speech(wait=force)
            return
        total = sum(s.end - s.start for s in self.speech)
        full = total >= WHISPER_WINDOW_S * self.config.models.speech.batch_size
        # Live: each utterance as soon as it ends, so its windows are not held back; while
        # the recogniser is busy the utterances that end wait and then go together (packed,
        # several cost what one costs), so a backlog shrinks instead of growing.
        live = self.decoder.live
        delay = 0.0 if live or self._speech_batches == 0 else MAX_SPEECH_DELAY_S
        stale = self.progress - self.speech[0].start >= delay
        busy = live and any(not pending.done() for _start, pending in self.transcribing)
        if force or full or (stale and not busy):
            batch, self.speech = self.speech, []
            if live:
                batch = self._language.apply(batch)
            self._speech_batches += 1
            pending = self._speech_pool.submit(self.encoders.transcribe, batch)
            self.transcribing.append((batch[0].start, pending))
            self._speech_seconds[pending] = sum(s.end - s.start for s in batch)
        else:
            self._bound_speech()
        self._collect_speech(wait=force)

    def _bound_speech(self) -> None:
        """Last resort for a recogniser slower than real time even when packed: speech
        waiting beyond ``live.max_pending_speech_s`` is dropped oldest first (counted in
        ``result.speech_dropped_s``) rather than held without bound."""
        limit = self.config.live.max_pending_speech_s
        while self.speech and sum(s.end - s.start for s in self.speech) > limit:
            dropped = self.speech.pop(0)
            self.result.speech_dropped_s += dropped.end - dropped.start
            logger.warning(
                "%s: speech backlog over %.0fs; dropped %.1fs of untranscribed speech",
                self.spec.source_id,
                limit,
                self.result.speech_dropped_s,
            )

    def _collect_speech(self, wait: bool) -> None:
        """Transcripts that are ready (all of them with ``wait``), in order, to the aggregator."""
        while self.transcribing and (wait or self.transcribing[0][1].done()):
            _start, pending = self.transcribing.popleft()
            self._speech_seconds.pop(pending, None)
            if not pending.cancelled():
                segments = pending.result()
                self._language.heard(segments)
                self.aggregator.add(Modality.SPEECH, segments)
