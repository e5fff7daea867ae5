"""Every cue of every text subtitle track lands in every window it overlaps.

Real generated files (MKV SubRip, MP4 mov_text, .srt and .vtt sidecars) through the real
analysis loop with the models replaced by ``NullEncoders`` (decode, windows, records only).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media import Cue
from subtitle_cases import KINDS, cue_recall, windows_of, write_cue_case

from mmlm_stream.config import Config
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.operators.container import read_embedded_cues
from mmlm_stream.operators.decode import decode
from mmlm_stream.operators.probe import probe
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.operators.subtitles import CueCleaner
from mmlm_stream.records.channels import DecodeWarning, SubtitleCue

DURATION_S = 6.0
TENTHS = st.integers(0, round((DURATION_S + 2.0) * 10))  # to 2 s past the last frame
LENGTHS = st.sampled_from([0.1, 0.5, 1.0, 2.0, 2.5])
# One item per model call: windows close as soon as the decoder lets them, so a cue that
# reaches them late is lost at once (bigger batches only hide it for a while).
EAGER = Config.model_validate({"models": {"visual": {"batch_size": 1}, "audio": {"batch_size": 1}}})


@st.composite
def cue_sets(draw: st.DrawFn, overlapping: bool) -> list[Cue]:
    """1-4 cues on a 0.1 s grid (window edges come up), from the first instant to after the
    last frame; overlapping where the container can hold it (MP4 cannot)."""
    cues = []
    t = 0.0
    for n in range(draw(st.integers(1, 4))):
        start = draw(TENTHS) / 10 if overlapping else t
        end = round(start + draw(LENGTHS), 1)
        cues.append(Cue(start, end, f"cue {n} says {n * 7 % 10}"))
        t = round(end + draw(st.sampled_from([0.0, 0.3, 1.0])), 1)
    return sorted(cues, key=lambda c: (c.start, c.end))


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, list[Cue], list[float], float]:
    kind = draw(st.sampled_from(KINDS))
    cues = draw(cue_sets(overlapping=kind != "mp4"))
    delays = [draw(st.sampled_from([0.0, 0.0, 2.5, 5.0])) for _ in cues]
    offset = draw(st.sampled_from([0.0, 0.5])) if kind in ("mkv", "mp4") else 0.0
    return kind, cues, delays, offset


@pytest.mark.slow
@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_every_cue_is_in_every_window_it_overlaps(case):
    kind, cues, delays, offset = case
    with tempfile.TemporaryDirectory() as tmp:
        written = write_cue_case(
            Path(tmp) / "clip", kind, cues, duration_s=DURATION_S, delays=delays, av_offset_s=offset
        )
        recall = cue_recall(written, windows_of(written.path, EAGER))
    assert recall.pairs > 0
    assert recall.missed == []


def test_first_of_three_subrip_cues_muxed_behind_later_frames_is_in_its_windows(tmp_path):
    """The reported case: the first cue (8-12 s) of three was stored behind 25 s of audio
    and video, reached the windows after they closed and was in none; probe counted 3."""
    cues = [Cue(8.0, 12.0, "first"), Cue(25.0, 26.0, "second"), Cue(28.0, 29.0, "third")]
    case = write_cue_case(tmp_path / "three", "mkv", cues, duration_s=30.0, delays=[16.9, 0.0, 0.0])
    assert [s.cues for s in probe(str(case.path)).streams if s.type == "subtitle"] == [3]
    windows = windows_of(case.path)
    first = [w.start for w in windows if any(s.text == "first" for s in w.subtitles)]
    assert first == [6.0, 8.0, 10.0]
    assert cue_recall(case, windows).missed == []


def test_embedded_cues_are_read_ahead_and_released_in_time_order(tmp_path):
    cues = [Cue(1.0, 2.0, "one"), Cue(3.0, 4.0, "two")]
    case = write_cue_case(tmp_path / "late", "mkv", cues, duration_s=6.0, delays=[4.0, 0.0])
    items = list(decode(str(case.path)))
    assert [item.sort_time for item in items] == sorted(item.sort_time for item in items)
    assert [(c.start, c.text) for c in items if isinstance(c, SubtitleCue)] == [
        (1.0, "one"),
        (3.0, "two"),
    ]


def test_cue_text_over_the_sidecar_bound_is_decoded_in_place_instead(tmp_path):
    cues = [Cue(1.0, 2.0, "one " * 20), Cue(3.0, 4.0, "two")]
    case = write_cue_case(tmp_path / "big", "mkv", cues, duration_s=5.0)
    config = DecodeConfig(max_sidecar_bytes=64)
    assert read_embedded_cues(resolve_source(str(case.path)), config, CueCleaner(2000)) is None
    decoded = [c.text for c in decode(str(case.path), config) if isinstance(c, SubtitleCue)]
    assert decoded == ["one " * 19 + "one", "two"]


def test_a_cue_after_the_last_frame_is_not_taken_for_a_truncated_file(tmp_path):
    cues = [Cue(1.0, 2.0, "one"), Cue(6.5, 8.0, "after the end")]
    case = write_cue_case(tmp_path / "after", "mkv", cues, duration_s=5.0)
    items = list(decode(str(case.path)))
    assert [c.text for c in items if isinstance(c, SubtitleCue)] == ["one", "after the end"]
    assert not [i for i in items if isinstance(i, DecodeWarning)]
