"""The transcript for subscribers: each utterance once, windows that reference it, and the
hop rule (``records.Speech``) by which joining the windows' ``new_text`` gives it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import real_speech
from hypothesis import given, settings
from hypothesis import strategies as st
from in_process import describe_source
from redis_fixtures import FAST, KEYS, RedisServer, redis_server  # noqa: F401

from mmlm_stream.bus.redis_bus import RedisPublisher
from mmlm_stream.config import Config
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.config.window import WindowConfig
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.operators.window import Windower
from mmlm_stream.pipeline.aggregate import SourceAggregator, hop_text, transcript_of
from mmlm_stream.pipeline.encoding import LocalEncoders
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import TranscriptSegment, Word
from mmlm_stream.records.schema import WindowRecord, utterance_id


def utterance(words: list[tuple[float, str]], length: float = 0.2) -> TranscriptSegment:
    timed = tuple(Word(t, t + length, text) for t, text in words)
    return TranscriptSegment(
        timed[0].start, timed[-1].end, " ".join(w.text for w in timed), "en", timed
    )


@settings(max_examples=150, deadline=None)
@given(
    starts=st.lists(st.floats(0.0, 40.0, allow_nan=False), min_size=1, max_size=40),
    per_utterance=st.integers(1, 6),
    hop=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    overlap=st.sampled_from([1, 2, 3]),
)
def test_every_word_lands_in_exactly_one_window_and_the_windows_rebuild_the_transcript(
    starts, per_utterance, hop, overlap
):
    times = sorted({round(t, 3) for t in starts})
    words = [(t, f"w{i}") for i, t in enumerate(times)]
    utterances = [
        utterance(words[i : i + per_utterance]) for i in range(0, len(words), per_utterance)
    ]
    windower = Windower("s", [Modality.SPEECH], window_s=hop * overlap, hop_s=hop)
    for u in utterances:
        windower.add(Modality.SPEECH, u)
    windows = windower.ready() + windower.finish()
    rebuilt = " ".join(
        text for c in windows if (text := hop_text(transcript_of(c), c.start, hop))
    ).split()
    assert rebuilt == [text for _, text in words]


def test_an_utterance_without_word_times_belongs_to_the_window_of_its_start():
    plain = TranscriptSegment(3.1, 6.5, "No word times here.")
    assert hop_text([plain], 2.0, 2.0) == "No word times here."
    assert hop_text([plain], 4.0, 2.0) == ""


def test_windows_reference_each_utterance_whole_with_a_stable_id():
    config = Config(window=WindowConfig(window_s=4.0, hop_s=2.0))
    aggregator = SourceAggregator("cam", config, frozenset({Modality.SPEECH}))
    said = utterance([(1.0, "Hello"), (2.5, "there,"), (4.2, "friend.")])
    aggregator.add(Modality.SPEECH, [said])
    aggregator.advance(Modality.SPEECH, 20.0)
    windows = [o.window for o in aggregator.poll().windows]
    holding = [w for w in windows if w.speech.segments]
    assert [w.start for w in holding] == [0.0, 2.0, 4.0]
    for window in holding:
        [segment] = window.speech.segments
        assert segment.utterance_id == utterance_id("cam", 1.0) == "cam:speech:1000"
        assert (segment.start, segment.end) == (1.0, 4.4)
        assert segment.text == "Hello there, friend."
    assert [w.speech.new_text for w in holding] == ["Hello", "there,", "friend."]
    assert holding[0].speech.text == "Hello there,"  # the words inside the window, as before


@pytest.mark.models
@pytest.mark.slow
def test_the_transcript_rebuilt_from_the_redis_window_stream_is_the_summarys(
    tmp_path: Path,
    model_cache: Path,
    redis_server: RedisServer,
):
    if not real_speech.ensure_available():
        pytest.skip(f"recorded prompts missing: {real_speech.install_hint()}")
    clip = real_speech.build_clip(tmp_path / "talk.mkv", count=4)
    config = Config(models=ModelsConfig(set="default", device="cpu", cache_dir=model_cache))
    with RedisPublisher(redis_server.url, RedisConfig(**FAST)) as publisher:
        describe_source(
            resolve_source(str(clip.path)),
            tmp_path / "out",
            config,
            LocalEncoders(config.models),
            on_window=lambda output: publisher.publish_window(output.window),
        )
        assert publisher.flush(10.0)
    summary = json.loads((tmp_path / "out" / "talk.mkv.summary.json").read_text())
    entries = redis_server.client().xrange(KEYS.windows("talk.mkv"))
    windows = [WindowRecord.read_json(fields[b"json"]) for _, fields in entries]
    assert windows and [w.start for w in windows] == sorted(w.start for w in windows)

    rebuilt = " ".join(w.speech.new_text for w in windows if w.speech.new_text)
    assert rebuilt.split() == summary["transcript"].split()
    assert real_speech.wer(clip.text, rebuilt) <= 0.1
    ids = [u["id"] for u in summary["utterances"]]
    assert len(ids) == len(set(ids)) >= len(clip.utterances)
    referenced = {s.utterance_id for w in windows for s in w.speech.segments}
    assert referenced == set(ids)
    for u in summary["utterances"]:
        holding = [w for w in windows if u["id"] in {s.utterance_id for s in w.speech.segments}]
        assert holding and all(w.start < u["end"] and w.end > u["start"] for w in holding)
        assert all(
            (s.start, s.end) == (u["start"], u["end"])
            for w in holding
            for s in w.speech.segments
            if s.utterance_id == u["id"]
        )
