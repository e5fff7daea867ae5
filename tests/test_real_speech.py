"""Real recorded speech through the whole pipeline, against one plain Whisper pass.

The clip (``real_speech``): ten recorded prompts of a human voice with pauses between them
in a 53 s video, and the same under a babble of other voices at 10 dB SNR. On it the service
must lose no utterance and transcribe at least as well as faster-whisper run once over the
whole file with no voice-activity gating and no packing (the bare model, same weights).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import real_speech
from in_process import describe_source

from mmlm_stream.config import Config
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models.speech_faster_whisper import assemble_whisper_base
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.pipeline.encoding import LocalEncoders
from mmlm_stream.pipeline.outputs import read_windows

pytestmark = [pytest.mark.models, pytest.mark.slow]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, real_speech.Clip]:
    if not real_speech.ensure_available():
        pytest.skip(f"recorded prompts missing: {real_speech.install_hint()}")
    folder = tmp_path_factory.mktemp("real-speech")
    return {
        "clean": real_speech.build_clip(folder / "clean.mkv"),
        "babble": real_speech.build_clip(folder / "babble.mkv", babble=True),
    }


@pytest.fixture(scope="module")
def ours(clips, model_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """Per clip: the summary, the windows and the events the pipeline wrote."""
    out = tmp_path_factory.mktemp("real-speech-out")
    config = Config(models=ModelsConfig(set="default", device="cpu", cache_dir=model_cache))
    encoders = LocalEncoders(config.models)
    found = {}
    for name, clip in clips.items():
        started = time.perf_counter()
        describe_source(resolve_source(str(clip.path)), out, config, encoders)
        stem = out / clip.path.name
        found[name] = {
            "summary": json.loads(Path(f"{stem}.summary.json").read_text()),
            "windows": read_windows(Path(f"{stem}.windows.jsonl")),
            "events": [
                json.loads(x) for x in Path(f"{stem}.events.jsonl").read_text().splitlines()
            ],
            "seconds": time.perf_counter() - started,
        }
    return found


@pytest.fixture(scope="module")
def plain(clips, model_cache: Path) -> dict[str, list[tuple[float, float, str]]]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(assemble_whisper_base(model_cache)), device="cpu", compute_type="int8")
    return {name: real_speech.plain_transcript(model, clip.path) for name, clip in clips.items()}


def _heard(summary: dict) -> list[tuple[float, float, str]]:
    return [(u["start"], u["end"], u["text"]) for u in summary["utterances"]]


@pytest.mark.parametrize("name", ["clean", "babble"])
def test_no_recorded_utterance_is_lost_in_the_file_transcript(clips, ours, name):
    clip, summary = clips[name], ours[name]["summary"]
    assert real_speech.lost(clip.utterances, _heard(summary)) == []


@pytest.mark.parametrize("name", ["clean", "babble"])
def test_the_transcript_is_at_least_as_good_as_one_plain_whisper_pass(clips, ours, plain, name):
    clip = clips[name]
    mine = real_speech.wer(clip.text, ours[name]["summary"]["transcript"])
    bare = real_speech.wer(clip.text, [text for _, _, text in plain[name]])
    assert mine <= bare, (name, mine, bare, ours[name]["summary"]["transcript"])


@pytest.mark.parametrize("name", ["clean", "babble"])
def test_every_window_where_words_were_spoken_has_them(clips, ours, name):
    """No window says "someone is speaking" over a prompt with no text where the words were."""
    for utterance in clips[name].utterances:
        middle = (utterance.start + utterance.end) / 2
        covering = [w for w in ours[name]["windows"] if w.start <= middle < w.end]
        assert covering and all(w.speech.text for w in covering), utterance


def test_a_speech_event_marks_each_utterance_after_a_noticeable_pause(clips, ours):
    """Every prompt of the clean clip follows a pause of at least about 1 s."""
    starts = [e["start"] for e in ours["clean"]["events"] if e["type"] == "speech"]
    for utterance in clips["clean"].utterances:
        assert any(abs(s - utterance.start) <= 0.5 for s in starts), (utterance, starts)
    assert len(starts) <= len(clips["clean"].utterances) + 2
