"""Checks of the media generators themselves, read back with plain PyAV (not our decoder)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import av.error
import numpy as np
import pytest
from media import (
    AUDIO_LANGUAGES,
    Cue,
    TcpTsServer,
    frame_value,
    mpegts_bytes,
    nearest_frame_index,
    vfr_times,
    write_ass,
    write_random_bytes,
    write_srt,
    write_truncated_mkv,
    write_truncated_mp4,
    write_unknown_codec,
    write_video,
    write_vtt,
    write_zero_byte,
)

CUES = [
    Cue(0.5, 1.5, "Hello"),
    Cue(2.0, 3.25, "Two\nlines"),
    Cue(3.5, 3.9, "Last one"),
]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def basic_mkv(media_dir: Path) -> Path:
    return write_video(media_dir / "basic.mkv")


def _video_frames(path: Path) -> list[tuple[float, float]]:
    """(time, mean grey) of every decoded video frame."""
    with av.open(str(path)) as container:
        return [
            (frame.time, float(frame.to_ndarray(format="rgb24").mean()))
            for frame in container.decode(video=0)
        ]


def _audio(path: Path, index: int = 0) -> tuple[np.ndarray, int]:
    """All decoded samples of audio track ``index`` (first channel) and the sample rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[index]
        chunks = [frame.to_ndarray()[0] for frame in container.decode(stream)]
        return np.concatenate(chunks), stream.codec_context.sample_rate


def _cues(path: Path) -> list[tuple[float, float]]:
    """(start, end) of every non-empty subtitle in the first subtitle stream."""
    found = []
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        for packet in container.demux(stream):
            if packet.dts is None or packet.pts is None:
                continue
            if stream.decode(packet):  # mov_text stores empty gap samples between cues
                start = float(packet.pts * packet.time_base)
                found.append((start, start + float(packet.duration * packet.time_base)))
    return found


def _assert_cue_times(found: list[tuple[float, float]]) -> None:
    assert len(found) == len(CUES)
    for (start, end), cue in zip(found, CUES, strict=True):
        assert start == pytest.approx(cue.start, abs=0.01)
        assert end == pytest.approx(cue.end, abs=0.01)


def test_mkv_has_h264_and_aac_with_frames_at_exact_times(basic_mkv: Path) -> None:
    with av.open(str(basic_mkv)) as container:
        kinds = [(s.type, s.codec_context.name) for s in container.streams]
        assert kinds == [("video", "h264"), ("audio", "aac")]
        assert container.duration / 1e6 == pytest.approx(4.0, abs=0.05)
    frames = _video_frames(basic_mkv)
    assert len(frames) == 100
    for i, (t, grey) in enumerate(frames):
        assert t == pytest.approx(i / 25, abs=1e-6)
        assert abs(grey - frame_value(i)) <= 1.5
        assert nearest_frame_index(grey, range(max(0, i - 5), i + 6)) == i


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])
def test_other_containers_hold_the_same_streams(media_dir: Path, suffix: str) -> None:
    path = write_video(media_dir / f"basic{suffix}")
    with av.open(str(path)) as container:
        assert [s.codec_context.name for s in container.streams] == ["h264", "aac"]
    frames = _video_frames(path)
    assert len(frames) == 100
    offset = frames[0][0]  # 0 in MP4; MPEG-TS shifts everything to avoid negative DTS
    assert offset == pytest.approx(0.0 if suffix == ".mp4" else 0.08, abs=1e-3)
    assert frames[-1][0] - offset == pytest.approx(99 / 25, abs=1e-6)


def test_audio_is_a_quiet_440_hz_sine_of_the_requested_length(media_dir: Path) -> None:
    path = write_video(media_dir / "sine.mp4", duration_s=2.0)
    samples, rate = _audio(path)
    assert rate == 44100
    # AAC pads the last frame: the decoder sees whole 1024-sample frames.
    assert 2 * 44100 <= len(samples) < 2 * 44100 + 1024
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.duration * stream.time_base == 2  # MP4 records the exact length
    body = samples[4096:-4096]
    assert np.abs(body).max() == pytest.approx(0.3, abs=0.03)
    spectrum = np.abs(np.fft.rfft(body))
    assert np.fft.rfftfreq(len(body), 1 / rate)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_two_audio_tracks_differ_in_language_and_pitch(media_dir: Path) -> None:
    path = write_video(media_dir / "two.mkv", duration_s=2.0, audio_tracks=2)
    with av.open(str(path)) as container:
        languages = [s.metadata.get("language") for s in container.streams.audio]
    assert languages == ["eng", "fra"] == list(AUDIO_LANGUAGES[:2])
    for index, pitch in [(0, 440), (1, 880)]:
        samples, rate = _audio(path, index)
        spectrum = np.abs(np.fft.rfft(samples))
        assert np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()] == pytest.approx(
            pitch, abs=2
        )


def test_odd_size_is_reported_exactly(media_dir: Path) -> None:
    path = write_video(media_dir / "odd.mp4", duration_s=1.0, width=641, height=361)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (641, 361)
        assert stream.codec_context.pix_fmt == "yuv444p"  # libx264 refuses odd 4:2:0
        frame = next(container.decode(stream))
        assert (frame.width, frame.height) == (641, 361)


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_vfr_frame_times_match_the_schedule(media_dir: Path, suffix: str) -> None:
    path = write_video(media_dir / f"vfr{suffix}", duration_s=2.0, vfr=True)
    expected = vfr_times(2.0)
    assert expected[:4] == [0.0, 0.02, 0.08, 0.1]
    frames = _video_frames(path)
    assert [t for t, _ in frames] == pytest.approx(expected, abs=1e-6)
    assert [round(g) for _, g in frames] == pytest.approx(
        [frame_value(i) for i in range(len(expected))], abs=1.5
    )


def test_audio_only_and_video_only_files(media_dir: Path) -> None:
    audio_only = write_video(media_dir / "audio_only.mp4", duration_s=1.0, video=False)
    video_only = write_video(media_dir / "video_only.mkv", duration_s=1.0, audio_tracks=0)
    with av.open(str(audio_only)) as container:
        assert [s.type for s in container.streams] == ["audio"]
    with av.open(str(video_only)) as container:
        assert [s.type for s in container.streams] == ["video"]
    with pytest.raises(ValueError):
        write_video(media_dir / "nothing.mkv", video=False, audio_tracks=0)


@pytest.mark.parametrize(
    ("suffix", "codec", "reported"),
    [
        (".mkv", None, "srt"),
        (".mkv", "ass", "ssa"),
        (".mkv", "webvtt", "webvtt"),
        (".mp4", None, "mov_text"),
    ],
)
def test_embedded_subtitles_keep_cue_times_and_language(
    media_dir: Path, suffix: str, codec: str | None, reported: str
) -> None:
    path = write_video(
        media_dir / f"subs_{codec}{suffix}",
        subtitles=CUES,
        subtitle_codec=codec,
        subtitle_language="deu",
    )
    with av.open(str(path)) as container:
        (stream,) = container.streams.subtitles
        assert stream.codec_context.name == reported
        assert stream.metadata["language"] == "deu"
    _assert_cue_times(_cues(path))


@pytest.mark.parametrize(("suffix", "codec"), [(".ts", None), (".mp4", "srt"), (".mkv", "x")])
def test_unsupported_subtitle_embeddings_are_refused(
    media_dir: Path, suffix: str, codec: str | None
) -> None:
    with pytest.raises(ValueError):
        write_video(media_dir / f"bad{suffix}", subtitles=CUES, subtitle_codec=codec)


@pytest.mark.parametrize("writer", [write_srt, write_vtt, write_ass])
def test_sidecars_parse_with_ffmpeg(media_dir: Path, writer) -> None:
    path = writer(media_dir / f"side.{writer.__name__[6:]}", CUES)
    _assert_cue_times(_cues(path))


def test_faststart_puts_the_mp4_index_first(media_dir: Path) -> None:
    fast = write_video(media_dir / "fast.mp4", duration_s=1.0, faststart=True).read_bytes()
    slow = write_video(media_dir / "slow.mp4", duration_s=1.0).read_bytes()
    assert fast.find(b"moov") < fast.find(b"mdat")
    assert slow.find(b"moov") > slow.find(b"mdat")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_zero_byte_and_random_files_are_rejected_on_open(media_dir: Path, suffix: str) -> None:
    for path in (
        write_zero_byte(media_dir / f"zero{suffix}"),
        write_random_bytes(media_dir / f"noise{suffix}"),
    ):
        with pytest.raises(av.error.InvalidDataError):
            av.open(str(path))


def test_truncated_mp4_has_no_index(media_dir: Path) -> None:
    path = write_truncated_mp4(media_dir / "truncated.mp4")
    assert b"moov" not in path.read_bytes()
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(path))


def test_truncated_mkv_decodes_only_its_start(media_dir: Path) -> None:
    path = write_truncated_mkv(media_dir / "truncated.mkv")
    frames = _video_frames(path)  # ends without an exception
    assert 20 < len(frames) < 100
    assert 1.0 < frames[-1][0] < 3.5
    samples, rate = _audio(path)
    assert 1.0 < len(samples) / rate < 3.5


def test_unknown_codec_video_has_no_decoder_but_audio_decodes(media_dir: Path) -> None:
    path = write_unknown_codec(media_dir / "unknown.mkv")
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert video.type == "video"
        assert video.codec_context is None
        packet = next(p for p in container.demux(video) if p.size)
        with pytest.raises(av.error.DecoderNotFoundError):
            video.decode(packet)
    samples, rate = _audio(path)
    assert len(samples) / rate == pytest.approx(4.0, abs=0.05)


def test_mpegts_bytes_is_whole_ts_packets() -> None:
    payload = mpegts_bytes(duration_s=1.0, audio=False)
    assert len(payload) % 188 == 0
    assert payload[0] == 0x47
    with av.open(io.BytesIO(payload), format="mpegts") as container:
        assert [s.type for s in container.streams] == ["video"]
        assert sum(1 for _ in container.decode(video=0)) == 25


def _read_frames(url: str, count: int) -> list[float]:
    with av.open(url, timeout=5) as container:
        greys = []
        for frame in container.decode(video=0):
            greys.append(float(frame.to_ndarray(format="rgb24").mean()))
            if len(greys) == count:
                break
        return greys


@pytest.mark.live
def test_tcp_server_serves_live_and_restarts_on_the_same_port() -> None:
    server = TcpTsServer(mpegts_bytes(duration_s=2.0), duration_s=2.0)
    url = server.url
    server.start()
    try:
        greys = _read_frames(url, 5)
        assert [nearest_frame_index(g, range(10)) for g in greys] == [0, 1, 2, 3, 4]
        greys = _read_frames(url, 3)  # after a client hangs up, the next one starts over
        assert nearest_frame_index(greys[0], range(10)) == 0
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(OSError):
            av.open(url, timeout=1)
        server.start()
        assert server.url == url
        assert len(_read_frames(url, 3)) == 3
        assert server.clients_served == 3
        assert server.bytes_sent > 0
    finally:
        server.stop()
