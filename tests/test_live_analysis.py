"""The analysis loop on a live source: stream events, wall times, backpressure."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from media import TcpTsServer, mpegts_bytes

from mmlm_stream.config import Config
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.live import FramePolicy, LiveConfig
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.config.window import WindowConfig
from mmlm_stream.operators.backpressure import LiveQueue
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.pipeline.aggregate import WindowOutput
from mmlm_stream.pipeline.analysis import SourceAnalysis
from mmlm_stream.pipeline.encoding import FrameResults, LocalEncoders
from mmlm_stream.records.channels import AudioChunk, Frame
from mmlm_stream.records.results import AudioEncoding, SpeechInput, TimeSpan, TranscriptSegment
from mmlm_stream.records.schema import EventRecord

pytestmark = [pytest.mark.live, pytest.mark.models, pytest.mark.slow]


class SlowFrames(LocalEncoders):
    """The real tiny models, with the frame encoder slowed down on purpose."""

    def __init__(self, models: ModelsConfig, delay_s: float) -> None:
        super().__init__(models)
        self.delay_s = delay_s
        self.audio_chunks = 0

    def encode_frames(self, frames: Sequence[Frame]) -> FrameResults:
        time.sleep(self.delay_s * len(frames))
        return super().encode_frames(frames)

    def encode_audio(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        self.audio_chunks += len(chunks)
        return super().encode_audio(chunks)


def _config(tiny_models: ModelsConfig, **live) -> Config:
    return Config(
        decode=DecodeConfig(frame_fps=0, stall_timeout_s=3),
        models=tiny_models,
        window=WindowConfig(window_s=2.0, hop_s=2.0, max_lateness_s=2.0),
        live=LiveConfig(**live),
    )


def test_slow_encoder_drops_frames_not_audio_and_windows_carry_wall_time(tiny_models):
    server = TcpTsServer(mpegts_bytes(4.0), 4.0)
    server.start()
    config = _config(tiny_models, max_queued_frames=4)
    encoders = SlowFrames(tiny_models, delay_s=0.08)  # 25 fps in, ~12 fps out
    windows: list[WindowOutput] = []
    events: list[EventRecord] = []
    stop = threading.Event()
    analysis = SourceAnalysis(
        resolve_source(server.url, "cam1"),
        config,
        encoders,
        on_window=windows.append,
        on_events=events.extend,
        stop=stop,
    )
    sizes: list[int] = []
    thread = threading.Thread(target=analysis.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(windows) < 4:
        if analysis.queue is not None:
            sizes.append(len(analysis.queue))
        time.sleep(0.05)
    stop.set()
    server.stop()
    thread.join(30)
    assert not thread.is_alive()
    assert len(windows) >= 4
    assert all(w.window.wall_start and w.window.wall_start.endswith("Z") for w in windows)
    queue = analysis.queue
    assert isinstance(queue, LiveQueue)
    assert queue.stats.frames_dropped > 0
    assert max(sizes) <= config.live.max_queued_frames + config.live.max_queued_items
    assert encoders.audio_chunks == queue.stats.audio_in  # every audio chunk was encoded
    states = [e.key for e in events if e.type == "stream"]
    assert states[:2] == ["connecting", "streaming"] and states[-1] == "ended"
    assert all(e.wall_start for e in events if e.type == "stream")


def test_drop_newest_and_block_policies():
    q = LiveQueue(max_frames=2, max_other=4, policy=FramePolicy.DROP_NEWEST)
    import numpy as np

    for t in range(5):
        q.put(Frame("s", float(t), np.zeros((2, 2, 3), np.uint8)))
    q.close()
    kept = []
    while (item := q.get()) is not None:
        kept.append(item.sort_time)
    assert kept == [0.0, 1.0] and q.stats.frames_dropped == 3


class SlowSpeech(LocalEncoders):
    """The real tiny models; every other second is speech and Whisper takes 2 s a call."""

    def __init__(self, models: ModelsConfig) -> None:
        super().__init__(models)
        self.transcribed = 0
        self.queue: Callable[[], LiveQueue | None] = lambda: None
        self.dropped_before: int | None = None  # frames dropped when Whisper was first called

    def encode_audio(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        return [
            replace(e, speech=(TimeSpan(e.start, e.end),) if int(e.start) % 2 == 0 else ())
            for e in super().encode_audio(chunks)
        ]

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]:
        if self.dropped_before is None and (queue := self.queue()) is not None:
            self.dropped_before = queue.stats.frames_dropped
        time.sleep(2.0)
        self.transcribed += len(speech)
        return [TranscriptSegment(s.start, s.end, "hello there", "en") for s in speech]


def test_slow_speech_recognition_does_not_hold_up_frames_or_audio(tiny_models):
    server = TcpTsServer(mpegts_bytes(6.0), 6.0)
    server.start()
    config = Config(
        decode=DecodeConfig(frame_fps=5, stall_timeout_s=3),
        models=tiny_models,
        window=WindowConfig(window_s=2.0, hop_s=2.0, max_lateness_s=8.0),
        live=LiveConfig(max_queued_frames=8),  # frames wait up to a 1 s audio chunk: 5 of them
    )
    encoders = SlowSpeech(tiny_models)
    windows: list[WindowOutput] = []
    stop = threading.Event()
    analysis = SourceAnalysis(
        resolve_source(server.url, "cam1"), config, encoders, on_window=windows.append, stop=stop
    )
    encoders.queue = lambda: analysis.queue
    thread = threading.Thread(target=analysis.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(w.window.speech.text for w in windows[2:]):
        time.sleep(0.1)
    stop.set()
    server.stop()
    thread.join(30)
    assert not thread.is_alive()
    assert encoders.transcribed >= 2
    assert any(w.window.speech.text == "hello there" for w in windows)  # in their windows
    queue = analysis.queue
    assert isinstance(queue, LiveQueue)
    # A 2 s blocking call would queue 10 more frames at 5 fps against a bound of 8 (the
    # start-up burst, before Whisper is first called, may drop some).
    assert queue.stats.frames_dropped == encoders.dropped_before
