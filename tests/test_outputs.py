"""Aggregation into records and the per-source output files, on synthetic encoder results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pysubs2
import webvtt

from mmlm_stream.config import Config
from mmlm_stream.pipeline.aggregate import SourceAggregator
from mmlm_stream.pipeline.outputs import SourceOutputs, is_done, read_windows, write_error
from mmlm_stream.records.channels import SubtitleCue
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import (
    AudioEncoding,
    FrameEncoding,
    Label,
    TimeSpan,
    TranscriptSegment,
)

CHANNELS = frozenset({Modality.VISUAL, Modality.AUDIO, Modality.SPEECH, Modality.SUBTITLES})


def _feed(aggregator: SourceAggregator, seconds: int = 12) -> list:
    outputs = []
    for t in range(seconds):
        cat = t < 6
        embedding = np.array([1.0, 0.0] if cat else [0.0, 1.0], np.float32)
        labels = (Label("tabby", 0.6),) if cat else (Label("espresso", 0.9),)
        aggregator.add(Modality.VISUAL, [FrameEncoding(float(t), embedding, labels)])
        speech = (TimeSpan(float(t), t + 1.0),) if t in (7, 8) else ()
        tags = (Label("Speech", 0.9),) if speech else (Label("Silence", 0.98),)
        aggregator.add(
            Modality.AUDIO, [AudioEncoding(float(t), t + 1.0, -30, -12, speech, (), tags)]
        )
        for channel in CHANNELS:
            aggregator.advance(channel, t + 1.0)
        if t == 9:
            aggregator.add(
                Modality.SPEECH, [TranscriptSegment(7.1, 8.9, "a package has arrived", "en")]
            )
        if t == 2:
            aggregator.add(Modality.SUBTITLES, [SubtitleCue("clip", 2.0, 3.5, "Here is a cat.")])
        outputs += aggregator.poll().windows
    finished, closing = aggregator.finish()
    return outputs + finished, closing


def test_records_files_and_subtitle_tracks(tmp_path: Path):
    config = Config()
    aggregator = SourceAggregator("clip", config, CHANNELS, model_ids={"visual": "test"})
    outputs, closing = _feed(aggregator)
    writer = SourceOutputs(tmp_path, "clip", "/videos/clip.mkv", config.window.hop_s)
    for output in outputs:
        writer.add(output)
    writer.add_events(closing)
    summary = writer.finish(duration=12.0, warnings=[], models={"visual": "test"}, late=0)

    windows = read_windows(tmp_path / "clip.windows.jsonl")
    assert [w.start for w in windows] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert windows[0].window_id == "clip:0" and windows[0].models == {"visual": "test"}
    assert "cat" in windows[0].description.lower()
    assert windows[1].subtitles[0].text == "Here is a cat."
    assert "a package has arrived" in windows[3].speech.text
    events = [
        json.loads(line) for line in (tmp_path / "clip.events.jsonl").read_text().splitlines()
    ]
    kinds = {e["type"] for e in events}
    assert {"speech", "scene_change"} <= kinds
    assert len({e["id"] for e in events}) == len(events)
    assert all(not e["ongoing"] for e in events)

    # The track: each cue in its window's centre hop, what changed only, a cue held over
    # the next hop while nothing changes (tests/test_description_track.py has the rules).
    srt = pysubs2.load(str(tmp_path / "clip.srt"))
    assert [(e.start, e.end, e.plaintext) for e in srt.events] == [
        (1000, 5000, 'A cat. "Here is a cat"'),
        (5000, 7000, "A cup of coffee. Someone is speaking."),
        (7000, 11000, '"a package has arrived"'),
    ]
    vtt = webvtt.read(str(tmp_path / "clip.vtt"))
    assert [c.text for c in vtt] == [e.plaintext for e in srt.events]
    assert (tmp_path / "clip.vtt").read_text().startswith("WEBVTT - mmlm-stream description")

    assert summary.windows == 6 and summary.duration == 12.0
    assert summary.transcript == "a package has arrived"
    assert summary.top_labels["visual"][0].label in {"tabby", "espresso"}
    assert is_done(tmp_path, "clip")


def test_a_failed_input_leaves_an_error_file_and_is_not_done(tmp_path: Path):
    path = write_error(tmp_path, "bad.mp4", "/x/bad.mp4", "bad.mp4: empty file (0 bytes)")
    assert json.loads(path.read_text())["reason"] == "bad.mp4: empty file (0 bytes)"
    assert not is_done(tmp_path, "bad.mp4")


def test_live_speech_event_goes_out_before_the_transcript_completes_its_window():
    from mmlm_stream.config.events import EventsConfig
    from mmlm_stream.rules.keyword import KeywordRule
    from mmlm_stream.rules.speech import SpeechRule

    events = EventsConfig(
        rules=[SpeechRule(name="speech"), KeywordRule(name="pkg", words=["package"])]
    )
    config = Config(events=events)
    channels = frozenset({Modality.VISUAL, Modality.AUDIO, Modality.SPEECH})
    aggregator = SourceAggregator("cam", config, channels, live=True)
    embedding = np.array([1.0, 0.0], np.float32)
    for t in range(5):
        aggregator.add(Modality.VISUAL, [FrameEncoding(float(t), embedding, ())])
        speech = (TimeSpan(1.0, 2.0),) if t == 1 else ()
        aggregator.add(Modality.AUDIO, [AudioEncoding(float(t), t + 1.0, -30, -12, speech)])
        aggregator.advance(Modality.VISUAL, t + 1.0)
        aggregator.advance(Modality.AUDIO, t + 1.0)
    aggregator.advance(Modality.SPEECH, 1.0)  # the utterance at 1-2 s is being transcribed
    polled = aggregator.poll()
    assert polled.windows == []  # [0, 4) waits for its transcript ...
    assert [e.type for e in polled.events] == ["speech"]  # ... its speech event does not
    assert aggregator.poll().events == []  # handed out once

    aggregator.add(Modality.SPEECH, [TranscriptSegment(1.0, 2.0, "a package is here", "en")])
    aggregator.advance(Modality.SPEECH, 5.0)
    closed = aggregator.poll().windows
    assert [o.window.start for o in closed] == [0.0]
    record = closed[0].window
    assert record.speech.text == "a package is here"
    assert [e.type for e in closed[0].events] == ["keyword"]  # the text rule, at close
    assert record.events == [polled.events[0].id, closed[0].events[0].id]
