"""The description track (``<source>.srt``/``.vtt``): cue timing, reading speed, and quotes.

The track's cues come from ``operators/captions``: each window's cue is shown for the
window's centre hop, holds at most 20 characters per second of display, says only what
changed, and quotes a subtitle that says what the recogniser heard instead of the transcript.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pysubs2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from in_process import describe_source
from media import Cue, write_video
from subtitle_cases import NullEncoders, caption_cps_p95, caption_rates
from test_describe import CAT, _windows, labels, window

from mmlm_stream.cli.sample import write_sample
from mmlm_stream.config import Config
from mmlm_stream.operators.captions import CAPTION_CPS, Captioner, centre_hop, fit_text
from mmlm_stream.operators.sentences import Describer
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.pipeline.encoding import FrameResults
from mmlm_stream.pipeline.outputs import read_windows
from mmlm_stream.records.channels import AudioChunk, Frame, SubtitleCue
from mmlm_stream.records.results import (
    AudioEncoding,
    FrameEncoding,
    Label,
    SpeechInput,
    TimeSpan,
    TranscriptSegment,
)

# What each photo of the bundled sample looks like to an ImageNet model (tests/../ENVIRONMENT).
PHOTO_LABELS = {
    "chelsea": labels(("tabby", 0.45), ("Egyptian cat", 0.3)),
    "coffee": labels(("espresso", 0.9)),
    "astronaut": labels(("bobsled", 0.4)),
    "rocket": labels(("projectile, missile", 0.6)),
    "camera": labels(("reflex camera", 0.7)),
    "hubble_deep_field": labels(("jellyfish", 0.35)),
}


def _heard(text: str) -> str:
    """A transcript of ``text`` as Whisper gives it: no markup, lower case, a word misheard."""
    plain = text.replace("<i>", "").replace("</i>", "").lower().rstrip(".")
    return plain.replace("eyes", "ice").replace("flag", "flack")


class ScriptedEncoders(NullEncoders):
    """Model results from a script of what the clip holds: frame labels by time, and speech
    (voice activity, Speech tag, transcript) wherever a spoken line is; alarms tagged."""

    def __init__(
        self,
        scenes: Sequence[tuple[float, float, tuple[Label, ...]]],
        said: Sequence[Cue],
        alarms: Sequence[tuple[float, float]] = (),
    ) -> None:
        self.scenes = scenes
        self.said = said
        self.alarms = alarms

    def encode_frames(self, frames: Sequence[Frame]) -> FrameResults:
        found = []
        for f in frames:
            seen = next((lab for a, b, lab in self.scenes if a <= f.time < b), ())
            found.append(FrameEncoding(f.time, np.ones(4, np.float32), seen))
        return FrameResults(found)

    def encode_audio(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        out = []
        for c in chunks:
            spans = tuple(
                TimeSpan(max(c.start, s.start), min(c.end, s.end))
                for s in self.said
                if s.start < c.end and c.start < s.end
            )
            tags = [Label("Speech", 0.8)] if spans else []
            if any(a < c.end and c.start < b for a, b in self.alarms):
                tags.append(Label("Alarm", 0.8))
            out.append(AudioEncoding(c.start, c.end, -25.0, -10.0, spans, (), tuple(tags)))
        return out

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]:
        return [
            TranscriptSegment(max(s.start, u.start), min(s.end, u.end), _heard(s.text), "en")
            for u in speech
            for s in self.said
            if s.start < u.end and u.start < s.end
        ]


def _describe(path: Path, out: Path, encoders: NullEncoders) -> tuple[str, list]:
    describe_source(resolve_source(str(path)), out, Config(), encoders)
    track = (out / f"{path.name}.srt").read_text(encoding="utf-8")
    return track, read_windows(out / f"{path.name}.windows.jsonl")


@pytest.fixture(scope="module")
def sample_track(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list]:
    folder = tmp_path_factory.mktemp("sample")
    info = write_sample(folder / "sample.mkv", speech=False)
    scenes = [(s.start, s.end, PHOTO_LABELS[s.photo]) for s in info.segments]
    said = [Cue(c.start, c.end, c.text) for c in info.cues]
    return _describe(info.path, folder / "out", ScriptedEncoders(scenes, said, info.alarms))


GENERATED_CUES = [
    Cue(0.5, 3.0, "Here is a cat with bright green eyes."),
    Cue(3.5, 6.5, "A cup of coffee sits on the table, still steaming."),
    Cue(9.0, 11.5, "The dog wants to go out."),
]


@pytest.fixture(scope="module")
def generated_track(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list]:
    folder = tmp_path_factory.mktemp("generated")
    video = write_video(
        folder / "clip.mkv", duration_s=13.0, width=64, height=48, subtitles=GENERATED_CUES
    )
    dog = labels(("golden retriever", 0.5))
    scenes = [(0.0, 4.0, CAT), (4.0, 8.0, labels(("espresso", 0.9))), (8.0, 13.0, CAT + dog)]
    return _describe(video, folder / "out", ScriptedEncoders(scenes, GENERATED_CUES, [(7, 8)]))


def _centre_hops(windows: list) -> list[tuple[int, int]]:
    return [
        tuple(round(t * 1000) for t in centre_hop(w.start, w.end, 2.0))  # type: ignore[misc]
        for w in windows
    ]


@pytest.mark.slow
@pytest.mark.parametrize("track", ["sample_track", "generated_track"])
def test_each_cue_is_shown_for_its_windows_centre_hop(track: str, request: pytest.FixtureRequest):
    srt, windows = request.getfixturevalue(track)
    cues = pysubs2.SSAFile.from_string(srt).events
    hops = _centre_hops(windows)
    starts, ends = {a for a, _ in hops}, {b for _, b in hops}
    assert cues and all(c.start in starts and c.end in ends for c in cues)
    assert all(a.end <= b.start for a, b in itertools.pairwise(cues))
    # Window [0, 4)'s cue starts at 1 s: the cat at 1-3 s, not what comes later.
    assert cues[0].start == 1000 and "cat" in cues[0].plaintext.lower()


@pytest.mark.slow
@pytest.mark.parametrize("track", ["sample_track", "generated_track"])
def test_cues_read_at_most_20_characters_per_second(track: str, request: pytest.FixtureRequest):
    srt, windows = request.getfixturevalue(track)
    assert caption_cps_p95(srt) <= CAPTION_CPS
    assert max(caption_rates(srt)) <= CAPTION_CPS
    # The records keep the fuller sentences; the track says the same things, shorter.
    assert sum(len(w.description) for w in windows) > 2 * len(srt.split("\n\n"))


@pytest.mark.slow
def test_the_sample_track_quotes_its_subtitles_not_the_misheard_transcript(sample_track):
    srt, windows = sample_track
    text = " ".join(e.plaintext for e in pysubs2.SSAFile.from_string(srt).events)
    assert "green ice" not in text and "flack" not in text
    assert "Here is a cat with" in text
    described = " ".join(w.description for w in windows)
    assert "green eyes" in described and "green ice" not in described
    assert described.count("bright green eyes") == 1  # quoted once, not again next window
    assert "subtitle reads" not in described


def test_a_subtitle_that_says_what_was_heard_is_quoted_instead_of_the_transcript():
    cue = (SubtitleCue("cam", 0.5, 3.0, "Here is a cat with bright green eyes."),)
    heard = (TranscriptSegment(0.5, 3.0, "here is a cat with bright green ice"),)
    spans = (TimeSpan(0.5, 3.0),)
    describer = Describer()
    first = describer.describe(window(0, 4, transcript=heard, subtitles=cue, speech_spans=spans))
    assert first == 'Someone says: "Here is a cat with bright green eyes".'
    later = (TranscriptSegment(2.0, 3.0, "bright green ice"),)
    again = describer.describe(window(2, 6, transcript=later, subtitles=cue, speech_spans=spans))
    assert again == "Someone is still speaking."
    # A subtitle saying something else (a translation) leaves the recogniser's words.
    other = (SubtitleCue("cam", 0.5, 3.0, "Voici un chat aux yeux verts."),)
    assert Describer().describe(window(0, 4, transcript=heard, subtitles=other)) == (
        'Someone says: "here is a cat with bright green ice".'
    )


def test_only_what_changed_is_captioned_and_an_unchanged_cue_is_held():
    captioner = Captioner()
    dog = labels(("golden retriever", 0.5))
    assert captioner.caption(window(0, 4, visual=CAT), 2.0).text == "A cat."
    held = captioner.caption(window(2, 6, visual=CAT), 2.0)
    assert held.text == "" and held.holds
    assert captioner.caption(window(4, 8, visual=CAT + dog), 2.0).text == "A dog."
    gone = captioner.caption(window(6, 10, visual=dog), 2.0)  # the cat left: nothing new
    assert gone.text == "" and not gone.holds
    assert captioner.caption(window(8, 12, visual=dog), 2.0) == gone
    # After a gap (a seek, an outage) the track starts afresh.
    assert captioner.caption(window(40, 44, visual=dog), 2.0).text == "A dog."


def test_a_long_quote_is_cut_at_a_word_and_the_rest_comes_in_the_next_cue():
    captioner = Captioner()
    line = "a package has arrived at the front door and it is raining"
    heard = (TranscriptSegment(0.5, 5.5, line),)
    first = captioner.caption(window(0, 4, transcript=heard, visual=CAT), 2.0).text
    assert first.startswith('A cat. "a package has') and first.endswith('\u2026"')
    assert len(first) <= 40


def test_a_cue_the_end_of_the_media_shortens_is_cut_to_stay_readable():
    assert fit_text('A cat. "a package has arrived"', 2.0) == 'A cat. "a package has arrived"'
    cut = fit_text('A cat. "a package has arrived"', 1.0)
    assert len(cut) <= 20 and cut.count('"') == 2 and cut.endswith('\u2026"')
    assert fit_text("A cat and a dog.", 0.3) == ""


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_windows(), min_size=1, max_size=4), st.floats(0.5, 4.0))
def test_any_evidence_gives_cues_within_the_reading_speed(windows, display_s: float):
    captioner = Captioner()
    for fused in sorted(windows, key=lambda w: w.start):
        text = captioner.caption(fused, display_s).text
        assert len(text) <= int(CAPTION_CPS * display_s + 1e-9)


def test_a_subtitle_quoted_as_speech_is_not_quoted_again_as_a_subtitle_and_back():
    cue = (SubtitleCue("cam", 0.5, 5.0, "Here is a cat."),)
    heard = (TranscriptSegment(0.5, 2.0, "here is a cat"),)
    spans = (TimeSpan(0.5, 2.0),)
    describer, captioner = Describer(), Captioner()
    spoken = window(0, 4, transcript=heard, subtitles=cue, speech_spans=spans)
    shown = window(2, 6, subtitles=cue)  # the speech is over; the cue is still on screen
    assert describer.describe(spoken) == 'Someone says: "Here is a cat".'
    assert describer.describe(shown) == "The same subtitle is still shown."
    assert captioner.caption(spoken, 2.0).text == '"Here is a cat"'
    assert captioner.caption(shown, 2.0).holds
    # The other way round: a subtitle first shown alone, then heard.
    describer, captioner = Describer(), Captioner()
    alone = window(0, 4, subtitles=cue)
    heard_later = window(2, 6, transcript=heard, subtitles=cue, speech_spans=spans)
    assert describer.describe(alone) == 'A subtitle reads: "Here is a cat".'
    assert describer.describe(heard_later) == "Someone is still speaking."
    assert captioner.caption(alone, 2.0).text == '"Here is a cat"'
    assert captioner.caption(heard_later, 2.0).text == ""
