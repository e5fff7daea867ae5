"""Media limits that protect the service (issue 12): timestamp gaps, pictures too large,
pathological subtitles, job inputs too long or too large. Each test is named after what
the fuzz suite (tests/fuzz) found, or what the issue measured, and what happens now."""

from __future__ import annotations

import re
import time
from pathlib import Path

import av
import numpy as np
import pytest
from fuzz.endless import EndlessTs
from fuzz.mutate import HugeSize, Remux, write_seeds
from hypothesis import given, settings
from hypothesis import strategies as st
from media import Cue, mpegts_bytes, write_srt, write_video
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress

from mmlm_stream.cli.ray_driver import MediaSeconds, describe
from mmlm_stream.config import Config, load_config
from mmlm_stream.config.decode import DecodeConfig
from mmlm_stream.config.jobs import JobsConfig
from mmlm_stream.operators.audio_chunker import AudioChunker
from mmlm_stream.operators.container import ContainerDecoder, ReadError, select_streams
from mmlm_stream.operators.decode import decode
from mmlm_stream.operators.frame_sampler import FrameSampler
from mmlm_stream.operators.subtitles import CueCleaner, clean_cue_text, read_sidecar
from mmlm_stream.operators.window import Windower
from mmlm_stream.records.channels import AudioChunk, DecodeWarning, Frame, StreamStatus, SubtitleCue
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import AudioEncoding, FrameEncoding
from mmlm_stream.util.errors import SourceError

EMB = np.zeros(2, np.float32)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_seeds(tmp_path_factory.mktemp("seeds"))


def _items(target, config: DecodeConfig | None = None, **kwargs) -> list:
    return list(decode(str(target), config or DecodeConfig(), **kwargs))


# --------------------------------------------------------------------------- subtitles

_OLD_ASS = re.compile(r"\{[^}]*\}")
_OLD_HTML = re.compile(r"</?[A-Za-z][^>]*>")
_OLD_VTT = re.compile(r"<\d{1,2}:\d{2}(?::\d{2})?\.\d{3}>")


def _old_clean(raw: str) -> str:
    text = raw.replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " ")
    text = _OLD_HTML.sub("", _OLD_VTT.sub("", _OLD_ASS.sub("", text)))
    for entity, char in (("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&nbsp;", " ")):
        text = text.replace(entity, char)
    lines = (re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="{}<>/aZ1:. \n\\N&;", max_size=40))
def test_linear_cue_cleaning_gives_what_the_quadratic_regexes_gave(raw: str):
    assert clean_cue_text(raw) == _old_clean(raw)


@pytest.mark.parametrize("opener", ["{", "<a", "</b"])
def test_a_1mb_cue_of_unclosed_markup_cleans_in_well_under_a_second(opener: str):
    raw = opener * (1_000_000 // len(opener))
    started = time.perf_counter()
    text = clean_cue_text(raw)
    assert time.perf_counter() - started < 5.0  # the regexes took about 6 minutes
    assert text == raw  # nothing closes, so nothing is markup


def test_a_cue_longer_than_max_cue_chars_is_cut_and_counted():
    clean = CueCleaner(10)
    assert clean("{\\i1}short{\\i0}") == "short"
    assert clean("word " * 20) == "word word\u2026"
    assert len(clean("x" * 50)) == 10 and clean.truncated == 2


def test_a_sidecar_with_a_1mb_cue_of_tag_openers_is_read_in_well_under_a_second(tmp_path):
    path = write_srt(tmp_path / "x.srt", [Cue(0.1, 1.0, "<a" * 500_000), Cue(1, 2, "<i>ok</i>")])
    started = time.perf_counter()
    cues = read_sidecar(path, "x", clean=CueCleaner(2000))
    assert time.perf_counter() - started < 5.0  # pysubs2's own tag regex took ~25 minutes
    assert [len(c.text) for c in cues] == [2000, 2] and cues[1].text == "ok"


def test_a_sidecar_over_max_sidecar_bytes_is_skipped_with_a_warning(tmp_path: Path, seeds):
    video = tmp_path / "clip.mkv"
    video.write_bytes(seeds["mkv"].read_bytes())
    write_srt(tmp_path / "clip.srt", [Cue(0.1, 1.0, "x" * 5000)])
    items = _items(video, DecodeConfig(max_sidecar_bytes=4096))
    warnings = [i.reason for i in items if isinstance(i, DecodeWarning)]
    assert any("clip.srt: subtitles skipped" in w and "max_sidecar_bytes" in w for w in warnings)
    assert not [i for i in items if isinstance(i, SubtitleCue) and i.track == "file:clip.srt"]
    assert [i for i in items if isinstance(i, Frame)]


def test_a_huge_embedded_cue_is_cut_with_one_warning(tmp_path: Path):
    clip = write_video(
        tmp_path / "c.mkv",
        duration_s=1.0,
        width=64,
        height=48,
        subtitles=[Cue(0.1, 0.9, "y" * 9000)],
    )
    items = _items(clip, DecodeConfig(max_cue_chars=100))
    cues = [i for i in items if isinstance(i, SubtitleCue)]
    assert [len(c.text) for c in cues] == [100]
    assert [i.reason for i in items if isinstance(i, DecodeWarning)] == [
        f"{clip}: cut 1 subtitle cues to decode.max_cue_chars (100)"
    ]


# --------------------------------------------------------------------------- timestamps


def test_a_forward_timestamp_jump_in_a_file_is_a_reset_with_a_warning(tmp_path, seeds):
    jumped = Remux("mkv", 10, 1e6).write(seeds, tmp_path / "jump")
    items = _items(jumped)
    media = [i for i in items if isinstance(i, Frame | AudioChunk | SubtitleCue)]
    assert max(i.sort_time for i in media) < 5.0  # not 10^6 s, nor a window per hop to it
    warnings = [i.reason for i in items if isinstance(i, DecodeWarning)]
    assert warnings and all(w.startswith(f"{jumped}: timestamps of ") for w in warnings)
    assert any("jump +1000000" in w for w in warnings)
    audio = sum(len(i.samples) for i in items if isinstance(i, AudioChunk))
    assert audio < 16000 * 5  # no gap of silence either


def test_a_short_real_gap_in_a_file_keeps_its_timeline(tmp_path: Path, seeds):
    gapped = Remux("mkv", 10, 20.0).write(seeds, tmp_path / "gap")
    items = _items(gapped)
    assert not [i for i in items if isinstance(i, DecodeWarning)]
    frames = [i.time for i in items if isinstance(i, Frame)]
    assert frames[0] < 1.0 and 20.0 < frames[-1] < 23.0


def test_an_audio_gap_longer_than_max_fill_restarts_the_chunks_instead_of_filling_it():
    chunker = AudioChunker("s", 1.0, max_fill_s=5.0)
    tone = av.AudioFrame.from_ndarray(np.full((1, 16000), 0.5, np.float32), "fltp", "mono")
    tone.sample_rate = 16000
    chunks = chunker.push(tone, 0.0) + chunker.push(tone, 1e6) + chunker.flush()
    assert [c.start for c in chunks] == [0.0, 1e6]
    assert sum(len(c.samples) for c in chunks) == 32000


def test_a_stream_starting_a_day_after_the_others_is_moved_next_to_them(tmp_path, seeds):
    late = Remux("mkv", 0, 0.0, stream=1, offset_s=86_400.0).write(seeds, tmp_path / "late")
    items = _items(late)
    assert max(i.sort_time for i in items if isinstance(i, AudioChunk)) < 5.0
    assert any(
        "audio stream 1 jump +863" in i.reason for i in items if isinstance(i, DecodeWarning)
    )


# --------------------------------------------------------------------------- windows


def _drive(windower: Windower, events) -> list:
    out = []
    for channel, item in events:
        windower.add(channel, item)
        out += windower.ready()
    return out + windower.finish()


def test_windows_across_a_long_gap_are_skipped_not_emitted_one_per_hop():
    channels = [Modality.VISUAL, Modality.AUDIO]
    events = [(Modality.VISUAL, FrameEncoding(t, EMB)) for t in (0.5, 1.5, 1e9, 1e9 + 1)]
    events += [(Modality.AUDIO, AudioEncoding(t, t + 1, -20, -6)) for t in (0.0, 1e9)]
    events.sort(key=lambda e: getattr(e[1], "time", getattr(e[1], "start", 0)))
    started = time.perf_counter()
    windows = _drive(Windower("s", channels, 4.0, 2.0), events)
    assert time.perf_counter() - started < 1.0
    assert len(windows) <= 6 and windows[-1].start >= 1e9 - 4
    assert all(w.items for w in windows)


def test_a_gap_shorter_than_max_gap_keeps_its_empty_windows():
    events = [(Modality.VISUAL, FrameEncoding(t, EMB)) for t in (1.0, 31.0)]
    windows = _drive(Windower("s", [Modality.VISUAL], 4.0, 2.0, max_gap_s=60.0), events)
    assert [w.start for w in windows] == [2.0 * k for k in range(16)]


def test_a_live_windower_after_an_outage_closes_by_lateness_without_a_window_per_hop():
    now = [0.0]
    windower = Windower(
        "s", [Modality.VISUAL, Modality.AUDIO], 4.0, 2.0, max_lateness_s=2.0, clock=lambda: now[0]
    )
    windower.add(Modality.VISUAL, FrameEncoding(1.0, EMB))
    windower.add(Modality.VISUAL, FrameEncoding(1e7, EMB))  # back after an outage; audio lags
    now[0] = 10.0
    started = time.perf_counter()
    closed = windower.ready()
    assert time.perf_counter() - started < 1.0
    assert [w.start for w in closed] == [0.0] and windower.skipped_windows > 1e6


def test_an_item_claiming_a_day_lands_only_in_the_windows_near_its_start():
    cue = SubtitleCue("s", 0.0, 86_400.0, "forever")
    windows = _drive(
        Windower("s", [Modality.SUBTITLES], 4.0, 2.0, max_gap_s=60.0), [(Modality.SUBTITLES, cue)]
    )
    assert 25 <= len(windows) <= 32


# --------------------------------------------------------------------------- pictures


def test_a_video_claiming_more_than_max_pixels_fails_before_any_frame(tmp_path, seeds):
    huge = HugeSize("y4m", 9000, 9000).write(seeds, tmp_path / "huge")
    with pytest.raises(SourceError) as error:
        _items(huge)
    assert str(error.value) == (
        f"{huge}: video stream 0 is 9000x9000, over decode.max_pixels ({8192 * 4320})"
    )


def test_pictures_larger_than_max_pixels_are_refused_by_the_decoder_too(seeds):
    """A header can claim a small picture while the bitstream holds a large one: FFmpeg is
    told the limit as well, so no such frame is allocated (here the header is let through
    below the limit, as if it had lied)."""
    small = DecodeConfig(max_pixels=64 * 48 - 1)
    frames, error = [], ""
    with av.open(str(seeds["mkv"])) as container:
        selection = select_streams(container, DecodeConfig())
        session = ContainerDecoder("s", container, selection, small, FrameSampler(0), None)
        try:
            for items in session.packets():
                frames += [i for i in items if isinstance(i, Frame)]
        except ReadError as exc:
            error = str(exc)
    assert not frames and (session.bad_packets or "max_pixels" in error)


# --------------------------------------------------------------------------- job limits


def test_a_job_input_over_max_bytes_fails_before_it_is_opened(seeds):
    with pytest.raises(SourceError, match=r"over jobs\.max_bytes \(100\)$"):
        _items(seeds["mkv"], limits=JobsConfig(max_bytes=100))


def test_an_endless_http_stream_as_a_job_input_ends_at_max_duration_s():
    with EndlessTs(mpegts_bytes(2.0, 64, 48, 10)) as server:
        started = time.monotonic()
        with pytest.raises(SourceError) as error:
            _items(server.url, limits=JobsConfig(max_duration_s=12.0))
    assert time.monotonic() - started < 30
    assert str(error.value).startswith(f"{server.url}: longer than jobs.max_duration_s (12s")


def test_a_network_job_input_is_bounded_by_max_bytes_of_packets():
    with EndlessTs(mpegts_bytes(2.0, 64, 48, 10)) as server:
        with pytest.raises(SourceError, match=r"more than jobs\.max_bytes \(200000 bytes\)"):
            _items(server.url, limits=JobsConfig(max_bytes=200_000))


def test_a_live_source_is_not_bounded_by_job_limits():
    with EndlessTs(mpegts_bytes(2.0, 64, 48, 10)) as server:
        decoder = decode(server.url, DecodeConfig(live=True), limits=JobsConfig(max_duration_s=2))
        for item in decoder:
            if not isinstance(item, StreamStatus) and item.sort_time > 6.0:
                break
        decoder.stop.set()


def test_jobs_limits_are_a_config_section_of_their_own(tmp_path: Path):
    loaded = load_config(None, {"MMLM_JOBS__MAX_DURATION_S": "60"})
    assert loaded.jobs.max_duration_s == 60 and loaded.jobs.max_bytes == 64 * 1024**3
    with pytest.raises(ValidationError):
        Config.model_validate({"jobs": {"max_seconds": 1}})


def test_describe_fails_an_input_over_max_bytes_before_probing_it(tmp_path: Path, seeds):
    config = Config(jobs=JobsConfig(max_bytes=100))
    report = describe([str(seeds["mkv"])], tmp_path / "out", config, console=Console(quiet=True))
    assert report.failed == {
        "seed.mkv": f"{seeds['mkv']}: file is "
        f"{seeds['mkv'].stat().st_size} bytes, over jobs.max_bytes (100)"
    }


def test_describe_progress_shows_an_input_of_unknown_length():
    """The endless stream of the fuzz benchmark has no duration; its progress row crashed
    ``describe`` (``format(None, ".1f")``) and every input with it."""
    progress = Progress(MediaSeconds(), console=Console(quiet=True))
    progress.add_task("file", total=4.0)
    stream = progress.add_task("stream", total=None)
    progress.update(stream, completed=3.0)
    assert [MediaSeconds().render(t).plain for t in progress.tasks] == [
        "    0.0/4.0 s",
        "    3.0 s",
    ]
