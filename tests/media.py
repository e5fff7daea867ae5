"""Real media files for the decoder's tests, generated on the fly with PyAV and numpy.

No media binaries are committed: every test writes the small file it needs (2-6 s, well under
a second each). Frames are flat grey at ``frame_value(i)`` so a test can tell which source frame
was sampled; audio is a sine per track; subtitles are real embedded streams or sidecar files.

Facts about PyAV 18.1 / FFmpeg 8 that the helpers rely on (checked by ``test_media.py``):

* libx264 refuses odd sizes in yuv420p (``avcodec_open2`` fails), so odd sizes are encoded as
  H.264 High 4:4:4 (yuv444p); the stream then reports the odd size exactly.
* PyAV 18 encodes text subtitles itself (``SubtitleSet.create`` + ``encode_subtitle``), so no
  remux from a demuxed sidecar is needed: MKV takes subrip, ass and webvtt; MP4 takes mov_text
  only; MPEG-TS takes no text subtitles.
* AAC pads its last frame, so a decoder sees the sample count rounded up to whole 1024-sample
  frames (4 s at 44.1 kHz: 176400 samples in, 177152 decoded; MP4 still reports 176400).
* In MPEG-TS the muxer shifts all timestamps so none is negative (B-frame reordering and AAC
  priming): a 25 fps TS starts at 0.08 s, not 0. MKV and MP4 start at 0.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "Cue",
    "TcpTsServer",
    "frame_value",
    "mpegts_bytes",
    "nearest_frame_index",
    "remux_with_subtitles",
    "vfr_times",
    "write_ass",
    "write_random_bytes",
    "write_srt",
    "write_truncated_mkv",
    "write_truncated_mp4",
    "write_unknown_codec",
    "write_video",
    "write_vtt",
    "write_zero_byte",
]

AUDIO_LANGUAGES = ("eng", "fra", "deu", "spa", "ita", "jpn")
"""Language tag of audio track k (track 0 is "eng", track 1 "fra")."""

AUDIO_AMPLITUDE = 0.3
UNKNOWN_CODEC_ID = b"V_MMLM/UNKNOWN1"
"""Matroska CodecID that ``write_unknown_codec`` puts in place of ``V_MPEG4/ISO/AVC``."""

TS_PACKET = 188
_VFR_GAPS_MS = (20, 60)
_CONTAINERS = {".mkv": "matroska", ".mp4": "mp4", ".ts": "mpegts", ".m3u8": "hls"}
_DEFAULT_SUBTITLE_CODEC = {"matroska": "srt", "mp4": "mov_text"}
_SUBTITLE_ENCODERS = {
    "srt": "subrip",
    "subrip": "subrip",
    "ass": "ass",
    "ssa": "ass",
    "webvtt": "webvtt",
    "vtt": "webvtt",
    "mov_text": "mov_text",
}
_ASS_HEADER = (
    "[Script Info]\n"
    "ScriptType: v4.00+\n"
    "PlayResX: 384\n"
    "PlayResY: 288\n"
    "\n"
    "[V4+ Styles]\n"
    "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
    "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
    "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    "Style: Default,Arial,16,&H00FFFFFF,&H00FFFFFF,&H00000000,&H00000000,0,0,0,0,"
    "100,100,0,0,1,1,0,2,10,10,10,1\n"
    "\n"
    "[Events]\n"
    "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


@dataclass(frozen=True)
class Cue:
    """One subtitle cue; times in seconds of media time."""

    start: float
    end: float
    text: str


# --------------------------------------------------------------------------- frames and times


def frame_value(index: int) -> int:
    """Grey level (20..219) painted into source frame ``index``.

    Any two frames less than 28 apart differ by at least 7 levels (repeats every 200
    frames), so with an approximate index ``nearest_frame_index`` recovers the exact one
    despite compression and RGB<->YUV rounding (measured error <= 1 level).
    """
    return (index * 7) % 200 + 20


def nearest_frame_index(value: float, candidates: Iterable[int]) -> int:
    """The candidate frame index whose ``frame_value`` is closest to a measured mean grey."""
    return min(candidates, key=lambda i: abs(frame_value(i) - value))


def vfr_times(duration_s: float) -> list[float]:
    """Exact presentation times of the frames ``write_video(vfr=True)`` writes.

    Gaps alternate 20 ms / 60 ms (40 ms on average, i.e. 25 fps nominal), all whole
    milliseconds so every container stores them exactly.
    """
    limit_ms = round(duration_s * 1000)
    times: list[float] = []
    t_ms = 0
    k = 0
    while t_ms < limit_ms:
        times.append(t_ms / 1000)
        t_ms += _VFR_GAPS_MS[k % 2]
        k += 1
    return times


# --------------------------------------------------------------------------- sidecar writers


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _ass_clock(seconds: float) -> str:
    cs = round(seconds * 100)
    h, rest = divmod(cs, 360_000)
    m, rest = divmod(rest, 6000)
    s, cs = divmod(rest, 100)
    return f"{h:d}:{m:02d}:{s:02d}.{cs:02d}"


def _ass_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\\N")


def write_srt(path: str | Path, cues: Sequence[Cue]) -> Path:
    """SubRip sidecar; cue text is written as given (``<i>..</i>`` markup passes through)."""
    blocks = [
        f"{n}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n{c.text}\n"
        for n, c in enumerate(cues, start=1)
    ]
    path = Path(path)
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


def write_vtt(path: str | Path, cues: Sequence[Cue]) -> Path:
    """WebVTT sidecar; cue text is written as given."""
    blocks = [f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n{c.text}\n" for c in cues]
    path = Path(path)
    path.write_text("WEBVTT\n\n" + "\n".join(blocks), encoding="utf-8")
    return path


def write_ass(path: str | Path, cues: Sequence[Cue]) -> Path:
    """ASS sidecar (times in centiseconds); newlines become ``\\N``, ``{\\i1}`` tags pass."""
    lines = [
        f"Dialogue: 0,{_ass_clock(c.start)},{_ass_clock(c.end)},Default,,0,0,0,,{_ass_text(c.text)}"
        for c in cues
    ]
    path = Path(path)
    path.write_text(_ASS_HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- encoding


def _layout(channels: int) -> str:
    named = {1: "mono", 2: "stereo", 6: "5.1"}
    if channels not in named:
        raise ValueError(f"audio_channels must be one of {sorted(named)}, got {channels}")
    return named[channels]


def _encode(
    out: av.container.OutputContainer,
    *,
    duration_s: float,
    width: int,
    height: int,
    fps: float,
    audio_tracks: int,
    audio_rate: int,
    audio_channels: int,
    video: bool,
    vfr: bool,
    cues: Sequence[Cue] | None,
    subtitle_encoder: str | None,
    subtitle_language: str,
) -> None:
    """Encode grey video, sine audio and text subtitles into ``out``, fed in time order.

    Feeding the encoders in media-time order keeps the file interleaved, which matters for
    the truncated variants (their first part must hold both audio and video).
    """
    if not video and audio_tracks == 0:
        raise ValueError("a file needs video or at least one audio track")
    rate = Fraction(fps).limit_denominator(1001)

    vstream = None
    if video:
        odd = width % 2 or height % 2
        vstream = out.add_stream("libx264", rate=rate)
        vstream.width, vstream.height = width, height
        # libx264 cannot do odd sizes in 4:2:0; 4:4:4 keeps H.264 and the exact size.
        vstream.pix_fmt = "yuv444p" if odd else "yuv420p"
        vstream.codec_context.gop_size = max(1, round(float(rate)))  # a keyframe each second
        if vfr:
            vstream.codec_context.time_base = Fraction(1, 1000)
            vstream.time_base = Fraction(1, 1000)

    astreams = []
    for k in range(audio_tracks):
        astream = out.add_stream("aac", rate=audio_rate)
        astream.layout = _layout(audio_channels)
        astream.metadata["language"] = AUDIO_LANGUAGES[k % len(AUDIO_LANGUAGES)]
        astreams.append(astream)

    sstream = None
    if cues is not None and subtitle_encoder is not None:
        sstream = out.add_stream(subtitle_encoder)
        sstream.codec_context.subtitle_header = _ASS_HEADER.encode()
        sstream.metadata["language"] = subtitle_language

    out.start_encoding()  # writes the header: the subtitle time base is known from here on

    # Schedule: (time, order, kind, payload). Order keeps video before audio at equal times.
    events: list[tuple[float, int, str, object]] = []
    if vstream is not None:
        if vfr:
            times = vfr_times(duration_s)
            events += [(t, 0, "v", (i, round(t * 1000))) for i, t in enumerate(times)]
        else:
            n_frames = round(duration_s * rate)
            events += [(float(i / rate), 0, "v", (i, i)) for i in range(n_frames)]
    n_samples = round(duration_s * audio_rate)
    if astreams:
        events += [(s / audio_rate, 1, "a", s) for s in range(0, n_samples, 1024)]
    if sstream is not None and cues:
        events += [(c.start, 2, "s", (n, c)) for n, c in enumerate(cues)]
    events.sort(key=lambda e: (e[0], e[1]))

    sines = [
        (
            AUDIO_AMPLITUDE * np.sin(2 * np.pi * 440 * (k + 1) * np.arange(n_samples) / audio_rate)
        ).astype(np.float32)
        for k in range(len(astreams))
    ]
    layout = _layout(audio_channels)
    vtb = vstream.codec_context.time_base if vstream is not None else None

    for _t, _order, kind, payload in events:
        if kind == "v":
            assert vstream is not None
            index, pts = payload  # type: ignore[misc]
            rgb = np.full((height, width, 3), frame_value(index), np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = pts
            frame.time_base = vtb
            out.mux(vstream.encode(frame))
        elif kind == "a":
            start = int(payload)  # type: ignore[call-overload]
            for astream, sine in zip(astreams, sines, strict=True):
                chunk = sine[start : start + 1024]
                planes = np.ascontiguousarray(np.tile(chunk, (audio_channels, 1)))
                aframe = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
                aframe.sample_rate = audio_rate
                aframe.pts = start
                aframe.time_base = Fraction(1, audio_rate)
                out.mux(astream.encode(aframe))
        else:
            assert sstream is not None
            n, cue = payload  # type: ignore[misc]
            tb = sstream.time_base
            pts = round(cue.start / tb)
            dialogue = f"{n},0,Default,,0,0,0,,{_ass_text(cue.text)}".encode()
            subset = av.subtitles.subtitle.SubtitleSet.create(
                dialogue, 0, round((cue.end - cue.start) * 1000), pts
            )
            packet = sstream.codec_context.encode_subtitle(subset)
            packet.stream = sstream
            packet.pts = packet.dts = pts
            packet.duration = round((cue.end - cue.start) / tb)
            out.mux(packet)

    if vstream is not None:
        out.mux(vstream.encode(None))
    for astream in astreams:
        out.mux(astream.encode(None))


def write_video(
    path: str | Path,
    *,
    duration_s: float = 4.0,
    width: int = 320,
    height: int = 240,
    fps: float = 25,
    audio_tracks: int = 1,
    audio_rate: int = 44100,
    audio_channels: int = 2,
    video: bool = True,
    subtitles: Sequence[Cue] | None = None,
    subtitle_codec: str | None = None,
    subtitle_language: str = "eng",
    vfr: bool = False,
    faststart: bool = False,
) -> Path:
    """Write a real media file; the container follows the extension (.mkv, .mp4, .ts, .m3u8).

    Video is H.264 with flat frames of grey ``frame_value(i)``; frame i is at exactly i/fps
    (Matroska rounds to whole ms) or at ``vfr_times(duration_s)[i]`` when ``vfr``. Audio
    track k is a sine of 440*(k+1) Hz, amplitude 0.3, AAC, language ``AUDIO_LANGUAGES[k]``.
    ``subtitles`` become an embedded text stream: ``subtitle_codec`` "srt" (default for
    .mkv), "ass" or "webvtt" in MKV, "mov_text" (default and only choice) in MP4; cue text is
    ASS dialogue text (newlines allowed; ``{\\i1}`` tags; in SRT ``<i>`` also reads back as
    italics). ``faststart`` moves the MP4 index (moov) before the media data.
    """
    path = Path(path)
    fmt = _CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unsupported extension {path.suffix!r}; use one of {list(_CONTAINERS)}")
    encoder = None
    if subtitles is not None:
        codec = subtitle_codec or _DEFAULT_SUBTITLE_CODEC.get(fmt)
        if codec is None:
            raise ValueError(f"{fmt} cannot carry text subtitles; use a sidecar")
        encoder = _SUBTITLE_ENCODERS.get(codec)
        if encoder is None:
            raise ValueError(f"unknown subtitle codec {codec!r}")
        if (fmt == "mp4") != (encoder == "mov_text"):
            raise ValueError(f"{fmt} cannot carry {codec!r} subtitles")
    options = {"movflags": "+faststart"} if faststart and fmt == "mp4" else {}
    if fmt == "hls":  # a VOD playlist with 1 s MPEG-TS segments next to it
        options = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}
    with av.open(str(path), "w", format=fmt, options=options) as out:
        _encode(
            out,
            duration_s=duration_s,
            width=width,
            height=height,
            fps=fps,
            audio_tracks=audio_tracks,
            audio_rate=audio_rate,
            audio_channels=audio_channels,
            video=video,
            vfr=vfr,
            cues=subtitles,
            subtitle_encoder=encoder,
            subtitle_language=subtitle_language,
        )
    return path


def _subtitle_packet(sstream: av.subtitles.stream.SubtitleStream, n: int, cue: Cue) -> av.Packet:
    tb = sstream.time_base
    pts = round(cue.start / tb)
    dialogue = f"{n},0,Default,,0,0,0,,{_ass_text(cue.text)}".encode()
    subset = av.subtitles.subtitle.SubtitleSet.create(
        dialogue, 0, round((cue.end - cue.start) * 1000), pts
    )
    packet = sstream.codec_context.encode_subtitle(subset)
    packet.stream = sstream
    packet.pts = packet.dts = pts
    packet.duration = round((cue.end - cue.start) / tb)
    return packet


def remux_with_subtitles(
    path: str | Path,
    source: str | Path,
    cues: Sequence[Cue],
    *,
    delays: Sequence[float] | None = None,
    av_offset_s: float = 0.0,
    subtitle_codec: str | None = None,
) -> Path:
    """Copy ``source``'s audio and video (a ``write_video`` file without subtitles) into
    ``path`` and add ``cues`` as an embedded text stream, cue k muxed ``delays[k]`` seconds
    after its start: stored behind that much later audio and video, as a muxer writes a cue
    it gets late (FFmpeg writes a sparse stream's packet when it arrives; each stream stays
    in time order, so a cue is never muxed before an earlier one). ``av_offset_s`` moves
    audio and video later, so cues can come before the first frame. The container follows
    the extension (.mkv, .mp4); cues must be sorted by start (MP4 cannot overlap them).
    """
    path = Path(path)
    fmt = _CONTAINERS[path.suffix.lower()]
    encoder = _SUBTITLE_ENCODERS[subtitle_codec or _DEFAULT_SUBTITLE_CODEC[fmt]]
    delays = list(delays) if delays is not None else [0.0] * len(cues)
    # Each cue is muxed at its start plus its delay, never before the cue before it.
    due: list[tuple[float, int, Cue]] = []
    for n, (cue, delay) in enumerate(zip(cues, delays, strict=True)):
        due.append((max(cue.start + delay, due[-1][0] if due else -1.0), n, cue))
    # A tiny interleave delta: the muxer writes each packet as it gets it, like a live muxer.
    options = {"max_interleave_delta": "1"}
    with (
        av.open(str(source)) as src,
        av.open(str(path), "w", format=fmt, container_options=options) as out,
    ):
        inputs = [s for s in src.streams if s.type in ("video", "audio")]
        copies = {s.index: out.add_stream_from_template(s) for s in inputs}
        sstream = out.add_stream(encoder)
        sstream.codec_context.subtitle_header = _ASS_HEADER.encode()
        sstream.metadata["language"] = "eng"
        out.start_encoding()
        for packet in src.demux(*inputs):
            if packet.dts is None:
                continue
            at = float(packet.dts * packet.time_base) + av_offset_s
            while due and due[0][0] <= at:
                _, n, cue = due.pop(0)
                out.mux(_subtitle_packet(sstream, n, cue))
            shift = round(av_offset_s / packet.time_base)
            packet.pts = packet.pts + shift if packet.pts is not None else None
            packet.dts += shift
            packet.stream = copies[packet.stream.index]
            out.mux(packet)
        for _, n, cue in due:
            out.mux(_subtitle_packet(sstream, n, cue))
    return path


def mpegts_bytes(
    duration_s: float = 6.0,
    width: int = 320,
    height: int = 240,
    fps: float = 25,
    audio: bool = True,
) -> bytes:
    """An in-memory MPEG-TS clip (H.264 + AAC, grey ``frame_value`` frames) for live tests."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as out:
        _encode(
            out,
            duration_s=duration_s,
            width=width,
            height=height,
            fps=fps,
            audio_tracks=1 if audio else 0,
            audio_rate=44100,
            audio_channels=2,
            video=True,
            vfr=False,
            cues=None,
            subtitle_encoder=None,
            subtitle_language="eng",
        )
    return buffer.getvalue()


# --------------------------------------------------------------------------- broken files


def write_zero_byte(path: str | Path) -> Path:
    """An empty file: opening it must fail cleanly."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_random_bytes(path: str | Path, size: int = 64_000, seed: int = 0) -> Path:
    """Deterministic noise with a media extension: no demuxer should accept it."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_truncated_mp4(path: str | Path) -> Path:
    """A 4 s MP4 written without faststart (moov at the end), cut to half: no index at all."""
    path = write_video(path, duration_s=4.0, faststart=False)
    return _cut(path, 0.5)


def write_truncated_mkv(path: str | Path) -> Path:
    """A 4 s MKV with audio and video cut to 60%: the start decodes, the end stops abruptly."""
    path = write_video(path, duration_s=4.0)
    return _cut(path, 0.6)


def write_unknown_codec(path: str | Path) -> Path:
    """An MKV whose video CodecID is patched to ``V_MMLM/UNKNOWN1``; its audio stays valid.

    The id has the same length as ``V_MPEG4/ISO/AVC``, so no EBML size changes. PyAV 18.1
    opens the file and lists the video stream (``type == "video"``, ``repr`` shows
    ``video/<nocodec>``) but its ``codec_context`` is None (so ``.width`` etc. raise
    AttributeError) and decoding its packets raises ``av.error.DecoderNotFoundError``.
    """
    path = write_video(path, duration_s=4.0)
    data = path.read_bytes()
    old = b"V_MPEG4/ISO/AVC"
    if data.count(old) != 1:
        raise RuntimeError(f"expected one {old!r} in {path}, found {data.count(old)}")
    path.write_bytes(data.replace(old, UNKNOWN_CODEC_ID))
    return path


# --------------------------------------------------------------------------- live server


class TcpTsServer:
    """Serves MPEG-TS on tcp://127.0.0.1:<port> in real time from a writer thread, looping the
    clip, to one client at a time.

    Each client gets the clip from its first byte (PAT/PMT and a keyframe come first), paced at
    ``len(payload) / duration_s`` bytes per second in 7-TS-packet chunks. Looping replays the
    same bytes, so PTS jump back to the start at every loop: a live decoder sees a timestamp
    discontinuity, like a restarted encoder. A client that disconnects only ends its own
    session; the server then waits for the next one. ``stop()`` returns within about 0.5 s.
    """

    CHUNK = TS_PACKET * 7
    _POLL_S = 0.05

    def __init__(self, payload: bytes, duration_s: float, port: int = 0) -> None:
        if not payload or duration_s <= 0:
            raise ValueError("payload must be non-empty and duration_s positive")
        self.payload = payload
        self.duration_s = duration_s
        self.byte_rate = len(payload) / duration_s
        self.bytes_sent = 0
        self.clients_served = 0
        self._port = port
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._thread: threading.Thread | None = None
        if port == 0:
            self._port = self._bind().getsockname()[1]  # reserve a port, kept across restarts
            self._close_listener()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self._port}"

    def _bind(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._port))
        listener.listen(1)
        listener.settimeout(self._POLL_S)
        self._listener = listener
        return listener

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def start(self) -> None:
        """Listen and serve from a daemon thread; may be called again after ``stop()``."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("server already running")
        self._stop.clear()
        listener = self._bind()
        self._thread = threading.Thread(
            target=self._serve, args=(listener,), name=f"TcpTsServer:{self._port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the client and the listening socket, and join the thread."""
        self._stop.set()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._close_listener()

    def drop_client(self) -> None:
        """Cut the current client off (a network drop) while the server keeps listening."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)

    def __enter__(self) -> TcpTsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed by stop()
            conn.settimeout(self._POLL_S)
            with self._lock:
                if self._stop.is_set():
                    _close_quietly(conn)
                    return
                self._client = conn
                self.clients_served += 1
            try:
                self._stream_to(conn)
            except OSError:
                pass  # client went away or drop_client()/stop() closed the socket
            finally:
                with self._lock:
                    if self._client is conn:
                        self._client = None
                _close_quietly(conn)

    def _stream_to(self, conn: socket.socket) -> None:
        view = memoryview(self.payload)
        size = len(view)
        offset = 0
        sent_here = 0
        started = time.monotonic()
        while not self._stop.is_set():
            due = (time.monotonic() - started) * self.byte_rate
            if sent_here >= due:
                wait = (sent_here - due) / self.byte_rate + 1e-3
                if self._stop.wait(min(wait, self._POLL_S)):
                    return
                continue
            end = min(offset + self.CHUNK, size)
            try:
                n = conn.send(view[offset:end])
            except TimeoutError:
                continue  # client not reading; keep position, check stop
            if n == 0:
                return
            offset = (offset + n) % size
            sent_here += n
            self.bytes_sent += n


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
