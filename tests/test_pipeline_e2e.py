"""End to end with the real default models on the generated sample (decode → encoders →
windows → fusion → description → events → files)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pysubs2
import pytest
from in_process import describe_source
from subtitle_cases import caption_cps_p95

from mmlm_stream.cli.sample import write_sample
from mmlm_stream.config import Config
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.pipeline.encoding import LocalEncoders
from mmlm_stream.pipeline.outputs import read_windows

pytestmark = [pytest.mark.models, pytest.mark.slow]


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    folder = tmp_path_factory.mktemp("e2e")
    info = write_sample(folder / "sample.mkv")
    config = Config(models=ModelsConfig(set="default", device="cpu", cache_dir=model_cache))
    summary = describe_source(
        resolve_source(str(info.path)), folder / "out", config, LocalEncoders(config.models)
    )
    windows = read_windows(folder / "out" / "sample.mkv.windows.jsonl")
    events = [
        json.loads(line)
        for line in (folder / "out" / "sample.mkv.events.jsonl").read_text().splitlines()
    ]
    return info, summary, windows, events, folder / "out"


def _overlapping(windows, start: float, end: float):
    return [w for w in windows if w.start < end and w.end > start]


def test_windows_cover_the_whole_sample(described):
    info, summary, windows, _, _ = described
    assert windows[0].start == 0.0
    assert windows[-1].end >= info.duration
    assert all(b.start - a.start == pytest.approx(2.0) for a, b in itertools.pairwise(windows))
    assert summary.windows == len(windows)
    assert all(w.description for w in windows)


def test_the_cat_photo_windows_mention_a_cat(described):
    info, _, windows, _, _ = described
    cat = next(s for s in info.segments if s.photo == "chelsea")
    inside = [w for w in windows if w.start >= cat.start and w.end <= cat.end + 1.0]
    assert inside and all("cat" in w.description.lower() for w in inside)


def test_speech_and_subtitles_land_in_the_windows_that_overlap_them(described):
    info, _, windows, _, _ = described
    for cue in info.cues:
        plain = cue.text.replace("<i>", "").replace("</i>", "")
        around = _overlapping(windows, cue.start, cue.end)
        assert all(any(s.text == plain for s in w.subtitles) for w in around)
        if info.speech:
            heard = " ".join(w.speech.text.lower() for w in around)
            words = [w.strip(".,").lower() for w in plain.split() if len(w) > 3]
            assert sum(word in heard for word in words) >= len(words) / 2, (plain, heard)
    quiet = [w for w in windows if not _overlapping([w], *(0, 0)) and not w.subtitles]
    assert all(not w.subtitles for w in quiet)


def test_speech_and_alarm_events_are_where_the_sample_has_them(described):
    info, summary, _, events, _ = described
    if info.speech:
        starts = [e["start"] for e in events if e["type"] == "speech"]
        assert starts and all(any(c.start - 0.5 <= s <= c.end for c in info.cues) for s in starts)
    alarms = [e for e in events if e["type"] == "sound"]
    assert any(e["start"] <= 17.2 and e["end"] >= 15.2 for e in alarms), alarms
    assert len({e["id"] for e in events}) == len(events)
    assert summary.events.get("sound", 0) >= 1


def test_description_track_parses_back_in_the_centre_hops_at_a_readable_rate(described):
    _, _, windows, _, out = described
    srt = (out / "sample.mkv.srt").read_text()
    subs = pysubs2.load(str(out / "sample.mkv.srt"))
    centres = {round((w.start + 1.0) * 1000) for w in windows}
    assert subs.events and all(e.start in centres for e in subs.events)
    assert caption_cps_p95(srt) <= 20
