from pathlib import Path

from mmlm_stream.operators.subtitles import (
    clean_cue_text,
    find_sidecars,
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
