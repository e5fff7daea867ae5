"""Live speech: each utterance is transcribed, none dropped, even with a slow recogniser.

Utterances that end while the recogniser is busy wait and then go together in one call
(``SourceAnalysis._flush_speech``): packed, several cost what one costs, so the backlog
shrinks instead of growing and nothing needs dropping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from media import write_video

from mmlm_stream.config import Config
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.config.window import WindowConfig
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.pipeline.aggregate import WindowOutput
from mmlm_stream.pipeline.analysis import SourceAnalysis
from mmlm_stream.pipeline.encoding import LocalEncoders
from mmlm_stream.records.channels import AudioChunk
from mmlm_stream.records.results import AudioEncoding, SpeechInput, TimeSpan, TranscriptSegment

pytestmark = [pytest.mark.live, pytest.mark.models, pytest.mark.slow]


class SlowRecogniser(LocalEncoders):
    """The tiny models; every even second is speech, and each recogniser call takes 1 s."""

    def __init__(self, models: ModelsConfig) -> None:
        super().__init__(models)
        self.calls: list[int] = []

    def encode_audio(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        return [
            replace(
                e, speech=(TimeSpan(e.start + 0.2, e.end - 0.2),) if int(e.start) % 2 == 0 else ()
            )
            for e in super().encode_audio(chunks)
        ]

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]:
        time.sleep(1.0)
        self.calls.append(len(speech))
        return [TranscriptSegment(s.start, s.end, f"said at {s.start:.2f}", "en") for s in speech]


def test_every_live_utterance_is_transcribed_and_busy_time_batches_them(
    tmp_path: Path, tiny_models: ModelsConfig
):
    path = write_video(tmp_path / "talk.mkv", duration_s=8.0, fps=2)
    config = Config(
        decode=DecodeConfig(live=True),
        models=tiny_models,
        window=WindowConfig(window_s=2.0, hop_s=2.0, max_lateness_s=30.0),
    )
    encoders = SlowRecogniser(tiny_models)
    windows: list[WindowOutput] = []
    stop = threading.Event()
    analysis = SourceAnalysis(
        resolve_source(str(path), "cam"), config, encoders, on_window=windows.append, stop=stop
    )
    thread = threading.Thread(target=analysis.run, daemon=True)
    thread.start()

    def said() -> list[str]:
        return [w.window.speech.new_text for w in windows if w.window.speech.new_text]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(said()) < 3:  # the last closes on stop
        time.sleep(0.1)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert analysis.result.speech_dropped_s == 0.0
    assert said()[:4] == [f"said at {t + 0.05:.2f}" for t in range(0, 8, 2)]
    assert sum(encoders.calls) >= 4  # one utterance per even second
    assert max(encoders.calls) >= 2  # waited while the recogniser was busy, then went together


class CallRecorder(SlowRecogniser):
    """The same speech every even second, answered at once; records how far the file's
    decoding had got (media seconds) at each call."""

    analysis: SourceAnalysis | None = None

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]:
        assert self.analysis is not None
        self.calls.append(round(self.analysis.progress))
        return [TranscriptSegment(s.start, s.end, f"said at {s.start:.2f}", "en") for s in speech]


def test_a_files_first_utterance_goes_at_once_so_its_first_window_is_not_held_back(
    tmp_path: Path, tiny_models: ModelsConfig
):
    path = write_video(tmp_path / "talk.mkv", duration_s=30.0, fps=2)
    config = Config(models=tiny_models, window=WindowConfig(window_s=2.0, hop_s=2.0))
    encoders = CallRecorder(tiny_models)
    windows: list[WindowOutput] = []
    analysis = SourceAnalysis(resolve_source(str(path)), config, encoders, on_window=windows.append)
    encoders.analysis = analysis
    analysis.run()
    first, *rest = encoders.calls
    assert first < 10  # not after the 20 s a later batch waits to fill
    assert rest and rest[0] >= 20
    said = [w.window.speech.new_text for w in windows if w.window.speech.new_text]
    assert said[:15] == [f"said at {t + 0.05:.2f}" for t in range(0, 30, 2)]
