import json
from pathlib import Path

from in_process import describe_source
from media import Cue, write_video
from subtitle_cases import NullEncoders

from mmlm_stream.config import Config
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.operators.subtitles import (
    DESCRIPTION_TRACK_MARK,
    clean_cue_text,
    find_sidecars,
    is_description_track,
    read_sidecar,
    sidecar_language,
)


def test_markup_is_stripped_from_cue_text():
    assert clean_cue_text("Hello {\\i1}world{\\i0}") == "Hello world"
    assert clean_cue_text("<i>Hi</i> <font color='red'>there</font>") == "Hi there"
    assert clean_cue_text("line one\\Nline two") == "line one\nline two"
    assert clean_cue_text("{\\an8}<b>Top</b>  text &amp; more") == "Top text & more"
    assert clean_cue_text("<00:00:01.000><c.yellow>word</c>") == "word"


def test_sidecars_next_to_a_video_are_found_with_their_language(tmp_path: Path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    for name in ["clip.srt", "clip.en.vtt", "clip.fr.ass", "other.srt", "clip.txt"]:
        (tmp_path / name).write_text("")
    found = [p.name for p in find_sidecars(video)]
    assert found == ["clip.en.vtt", "clip.fr.ass", "clip.srt"]
    assert sidecar_language("clip", tmp_path / "clip.en.vtt") == "en"
    assert sidecar_language("clip", tmp_path / "clip.srt") is None


def test_vtt_sidecar_cues_are_read_exactly(tmp_path: Path):
    path = tmp_path / "x.vtt"
    path.write_text(
        "WEBVTT\n\n00:00:01.250 --> 00:00:02.500\n<v Bob>Hello there</v>\n\n"
        "00:00:03.000 --> 00:00:04.000\nSecond\n"
    )
    cues = read_sidecar(path, "x.mp4", "en")
    assert [(c.start, c.end, c.text) for c in cues] == [
        (1.25, 2.5, "Hello there"),
        (3.0, 4.0, "Second"),
    ]
    assert cues[0].language == "en" and cues[0].track == "file:x.vtt"


def test_our_description_tracks_are_not_taken_for_sidecars(tmp_path: Path):
    video = tmp_path / "clip.mkv"
    video.write_bytes(b"")
    for name in ["clip.srt", "clip.mkv.srt", "clip.mkv.vtt", "clip.en.vtt"]:
        (tmp_path / name).write_text("")
    # Beside the run's records (SRT has no comments to carry a mark) ...
    (tmp_path / "clip.mkv.windows.jsonl").write_text("")
    # ... or, copied away from them, by the mark in its WebVTT header.
    (tmp_path / "clip.en.vtt").write_text(f"WEBVTT - {DESCRIPTION_TRACK_MARK}\n\n")
    assert [p.name for p in find_sidecars(video)] == ["clip.srt"]
    assert is_description_track(tmp_path / "clip.mkv.srt")
    assert not is_description_track(tmp_path / "clip.srt")


def test_describing_into_the_input_folder_twice_gives_the_same_windows(tmp_path: Path):
    """The demo's layout (``describe out/sample.mkv --out out``): the first run's
    ``sample.mkv.srt``/``.vtt`` lie next to the input, and the second run must not read its
    own descriptions back as subtitles."""
    cues = [Cue(0.5, 2.5, "Here is a cat."), Cue(4.0, 5.5, "A cup of coffee.")]
    video = write_video(tmp_path / "clip.mkv", duration_s=6.0, width=64, height=48, subtitles=cues)
    config = Config()

    def run() -> list[dict]:
        describe_source(resolve_source(str(video)), tmp_path, config, NullEncoders())
        lines = (tmp_path / "clip.mkv.windows.jsonl").read_text().splitlines()
        return [
            {k: v for k, v in json.loads(line).items() if k != "published_at"} for line in lines
        ]

    first = run()
    track = (tmp_path / "clip.mkv.srt").read_text()
    assert "Here is a cat" in track and (tmp_path / "clip.mkv.vtt").exists()
    assert run() == first
    shown = {s["text"] for w in first for s in w["subtitles"]}
    assert shown == {"Here is a cat.", "A cup of coffee."}
