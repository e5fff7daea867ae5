"""Seed media and their mutations, for the fuzz suite and ``benchmarks/fuzz.py``.

``write_seeds`` makes small real files with PyAV (64x48, about 1.5 s, a few kB each): MKV
(H.264, AAC, SubRip), MP4 (H.264, AAC, mov_text), MPEG-TS, Y4M (raw video), IVF (VP8), BMP,
WAV and AVI (MPEG-4, MP2), plus a 320x240 MKV whose size fields are two bytes wide, so they
can be patched in place. Each ``Mutation`` writes one input from them: byte damage
(truncation, bit flips, overwrites, splices), timestamps (re-muxed jumps, per-stream offsets,
PTS wrap-around, and patched MPEG-TS PES times, Matroska cluster times and MP4 sample
deltas), sizes in headers (Y4M, IVF, BMP, Matroska PixelWidth/PixelHeight, MP4 ``avc1``),
subtitles (1 MB cues of ``{`` or ``<a``, embedded or in an SRT sidecar, cues a day long),
zero-length files and noise. Mutations are plain values, so hypothesis draws them and a
failure prints the exact one.

Kept free of pytest; the decoding itself runs in ``worker.py`` (a child process, so a hang
can be killed and peak memory is the decoder's own).
"""

from __future__ import annotations

import random
import re
import shutil
import struct
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:  # media.py lives in tests/
    sys.path.insert(0, str(_TESTS))

from media import Cue, write_video  # noqa: E402

WIDTH, HEIGHT, FPS, SECONDS = 64, 48, 10, 1.5
BYTE_SEEDS = ("mkv", "mp4", "ts", "y4m", "ivf", "bmp", "wav", "avi")
REMUX_SEEDS = ("mkv", "mp4", "ts")
SUFFIX = {"mkv": ".mkv", "mkv320": ".mkv", "mp4": ".mp4", "ts": ".ts", "y4m": ".y4m"}
SUFFIX |= {"ivf": ".ivf", "bmp": ".bmp", "wav": ".wav", "avi": ".avi"}
PTS_WRAP_S = 2**33 / 90_000
"""MPEG-TS timestamps are 33 bits of a 90 kHz clock: they wrap after about 26.5 hours."""
BIG_CUE = 1_000_000


# --------------------------------------------------------------------------- seeds


def _frames(n: int, width: int = WIDTH, height: int = HEIGHT) -> list[av.VideoFrame]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8) // 4 + i * 8
        out.append(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24"))
    return out


def _write_raw_video(path: Path, fmt: str, codec: str, pix_fmt: str) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        for i, frame in enumerate(_frames(round(SECONDS * FPS))):
            frame = frame.reformat(format=pix_fmt)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _write_avi(path: Path) -> Path:
    with av.open(str(path), "w", format="avi") as out:
        video = out.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = out.add_stream("mp2", rate=16000)
        audio.layout = "mono"
        samples = 0
        for i, frame in enumerate(_frames(round(SECONDS * FPS))):
            frame.pts = i
            out.mux(video.encode(frame.reformat(format="yuv420p")))
            while samples < (i + 1) * 16000 // FPS:
                tone = (0.3 * np.sin(np.arange(samples, samples + 1152) / 5)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 16000, samples, Fraction(1, 16000)
                out.mux(audio.encode(af))
                samples += 1152
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path


def _write_wav(path: Path) -> Path:
    with av.open(str(path), "w", format="wav") as out:
        audio = out.add_stream("pcm_s16le", rate=16000)
        audio.layout = "mono"
        tone = (0.3 * np.sin(np.arange(int(16000 * SECONDS)) / 5)).astype(np.float32)
        for start in range(0, tone.size, 1600):
            piece = tone[start : start + 1600].reshape(1, -1)
            af = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, start, Fraction(1, 16000)
            out.mux(audio.encode(af))
        out.mux(audio.encode(None))
    return path


def _write_bmp(path: Path) -> Path:
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="BMP")
    return path


CUES = [Cue(0.2, 0.8, "Hello <i>there</i>"), Cue(0.9, 1.4, "{\\an8}Top line")]


def write_seeds(folder: Path) -> dict[str, Path]:
    """Every seed kind (``BYTE_SEEDS`` and ``mkv320``) written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    small = {"duration_s": SECONDS, "width": WIDTH, "height": HEIGHT, "fps": FPS}
    small |= {"audio_rate": 16000, "audio_channels": 1}
    seeds = {
        "mkv": write_video(folder / "seed.mkv", subtitles=CUES, **small),
        "mp4": write_video(folder / "seed.mp4", subtitles=CUES, **small),
        "ts": write_video(folder / "seed.ts", **small),
        "y4m": _write_raw_video(folder / "seed.y4m", "yuv4mpegpipe", "rawvideo", "yuv420p"),
        "ivf": _write_raw_video(folder / "seed.ivf", "ivf", "libvpx", "yuv420p"),
        "bmp": _write_bmp(folder / "seed.bmp"),
        "wav": _write_wav(folder / "seed.wav"),
        "avi": _write_avi(folder / "seed.avi"),
        "mkv320": write_video(
            folder / "seed320.mkv", duration_s=1.0, width=320, height=240, fps=5, audio_tracks=0
        ),
    }
    return seeds


# --------------------------------------------------------------------------- mutations


def _at(data: bytes | bytearray, fraction: float) -> int:
    return min(len(data) - 1, max(0, int(fraction * len(data)))) if data else 0


@dataclass(frozen=True)
class Mutation:
    """One input made from the seeds; ``write`` puts it at ``stem`` + the right suffix."""

    seed: str

    def write(self, seeds: dict[str, Path], stem: Path) -> Path:
        path = stem.with_suffix(SUFFIX.get(self.seed, ".bin"))
        path.write_bytes(bytes(self.mutate(seeds[self.seed].read_bytes(), seeds)))
        return path

    def mutate(self, data: bytes, seeds: dict[str, Path]) -> bytes | bytearray:
        return data


@dataclass(frozen=True)
class Truncate(Mutation):
    fraction: float

    def mutate(self, data: bytes, seeds: dict[str, Path]) -> bytes:
        return data[: int(len(data) * self.fraction)]


@dataclass(frozen=True)
class FlipBits(Mutation):
    positions: tuple[float, ...]
    header: bool = False
    """Flip within the first 512 bytes, where the container and codec headers are."""

    def mutate(self, data: bytes, seeds: dict[str, Path]) -> bytearray:
        out = bytearray(data)
        span = min(len(out), 512) if self.header else len(out)
        for position in self.positions:
            bit = int(position * span * 8) % (span * 8)
            out[bit // 8] ^= 1 << (bit % 8)
        return out


@dataclass(frozen=True)
class Overwrite(Mutation):
    at: float
    data: bytes

    def mutate(self, data: bytes, seeds: dict[str, Path]) -> bytearray:
        out = bytearray(data)
        start = _at(out, self.at)
        out[start : start + len(self.data)] = self.data
        return out


@dataclass(frozen=True)
class Splice(Mutation):
    """The head of one seed glued to the tail of another (or of itself: a repeat)."""

    other: str
    cut: float
    resume: float

    def mutate(self, data: bytes, seeds: dict[str, Path]) -> bytes:
        other = seeds[self.other].read_bytes()
        return data[: _at(data, self.cut)] + other[_at(other, self.resume) :]


@dataclass(frozen=True)
class Remux(Mutation):
    """Packets copied into the same container with rewritten timestamps: from packet
    ``at`` on, ``stream`` (None: all) moves by ``jump_s``; ``offset_s`` shifts one stream
    from the start; ``base_s`` shifts everything (near ``PTS_WRAP_S``: a wrap in MPEG-TS);
    ``drop_pts`` clears the times of every n-th packet; ``cue_s`` sets subtitle durations."""

    at: int
    jump_s: float
    stream: int | None = None
    offset_s: float = 0.0
    base_s: float = 0.0
    drop_pts: int = 0
    cue_s: float | None = None

    def write(self, seeds: dict[str, Path], stem: Path) -> Path:
        path = stem.with_suffix(SUFFIX[self.seed])
        try:
            self._remux(seeds[self.seed], path)
        except (ValueError, av.error.FFmpegError):
            pass  # the muxer refused its trailer: what it wrote is an input all the same
        return path

    def _remux(self, seed: Path, path: Path) -> None:
        fmt = {"mkv": "matroska", "mp4": "mp4", "ts": "mpegts"}[self.seed]
        with av.open(str(seed)) as src, av.open(str(path), "w", format=fmt) as out:
            streams = {}
            for stream in src.streams:
                if stream.type in ("video", "audio", "subtitle"):
                    streams[stream.index] = out.add_stream_from_template(stream)
            last: dict[int, int] = {}
            for n, packet in enumerate(src.demux(*[src.streams[i] for i in streams])):
                if packet.dts is None and packet.pts is None:
                    continue
                index = packet.stream.index
                tb = packet.time_base
                shift = self.base_s
                if self.stream is None or self.stream == index:
                    shift += self.offset_s if self.stream == index else 0.0
                    shift += self.jump_s if n >= self.at else 0.0
                ticks = round(shift / tb)
                pts = None if packet.pts is None else packet.pts + ticks
                dts = None if packet.dts is None else packet.dts + ticks
                if dts is not None and index in last and dts <= last[index]:
                    continue  # the muxer refuses dts that go back; byte patches cover that
                if self.drop_pts and n % self.drop_pts == 0 and packet.stream.type != "video":
                    pts = dts = None
                if self.cue_s is not None and packet.stream.type == "subtitle":
                    packet.duration = round(self.cue_s / tb)
                packet.pts, packet.dts = pts, dts
                if dts is not None:
                    last[index] = dts
                packet.stream = streams[index]
                try:
                    out.mux(packet)
                except (ValueError, av.error.FFmpegError):
                    continue  # a muxer that refuses this one: the next ones still go in


def _pes_pts(value: int) -> bytes:
    value &= (1 << 33) - 1
    return bytes(
        [
            0x21 | ((value >> 29) & 0x0E),
            (value >> 22) & 0xFF,
            0x01 | ((value >> 14) & 0xFE),
            (value >> 7) & 0xFF,
            0x01 | ((value << 1) & 0xFE),
        ]
    )


@dataclass(frozen=True)
class PatchTimes(Mutation):
    """Timestamps rewritten in the bytes, where no muxer checks them: MPEG-TS PES PTS,
    Matroska cluster timestamps, MP4 ``stts`` sample deltas. ``values`` (fractions of the
    field's range, cycled) go to the fields selected by ``every``/``first``."""

    values: tuple[float, ...]
    first: int = 0
    every: int = 1

    def mutate(self, data: bytes, seeds: dict[str, Path]) -> bytearray:
        out = bytearray(data)
        fields = list(self._fields(out))
        chosen = fields[self.first :: max(1, self.every)]
        for k, (offset, width) in enumerate(chosen):
            fraction = self.values[k % len(self.values)]
            if width == 5:  # a PES PTS: 33 bits
                out[offset : offset + 5] = _pes_pts(int(fraction * ((1 << 33) - 1)))
            else:
                top = (1 << (8 * width)) - 1
                out[offset : offset + width] = int(fraction * top).to_bytes(width, "big")
        return out

    def _fields(self, data: bytearray) -> list[tuple[int, int]]:
        if self.seed == "ts":
            found = []
            for start in range(0, len(data) - 188 + 1, 188):
                header = data[start : start + 4]
                if header[0] != 0x47 or not header[1] & 0x40:
                    continue
                payload = start + 4
                if header[3] & 0x20:
                    payload += 1 + data[payload]
                pes = data[payload : payload + 14]
                if len(pes) == 14 and pes[:3] == b"\x00\x00\x01" and pes[7] & 0x80:
                    found.append((payload + 9, 5))
            return found
        if self.seed == "mkv":
            found = []
            for match in re.finditer(rb"\x1f\x43\xb6\x75", data):
                at = data.find(b"\xe7", match.end(), match.end() + 16)
                if at > 0 and data[at + 1] & 0x80:
                    width = data[at + 1] & 0x7F
                    if 1 <= width <= 8:
                        found.append((at + 2, width))
            return found
        if self.seed == "mp4":
            at = data.find(b"stts")
            if at < 0:
                return []
            count = struct.unpack(">I", data[at + 8 : at + 12])[0]
            return [(at + 12 + 8 * k + 4, 4) for k in range(min(count, 64))]
        return []


def _patch_text_size(data: bytes, width: int, height: int) -> bytes:
    head, sep, rest = data.partition(b"\n")
    head = re.sub(rb" W\d+", f" W{width}".encode(), head, count=1)
    head = re.sub(rb" H\d+", f" H{height}".encode(), head, count=1)
    return head + sep + rest


@dataclass(frozen=True)
class HugeSize(Mutation):
    """A header that claims ``width`` x ``height`` (the pictures themselves stay small)."""

    width: int
    height: int

    def mutate(self, data: bytes, seeds: dict[str, Path]) -> bytes | bytearray:
        out = bytearray(data)
        w16, h16 = min(self.width, 0xFFFF), min(self.height, 0xFFFF)
        if self.seed == "y4m":
            return _patch_text_size(data, self.width, self.height)
        if self.seed == "ivf":
            out[12:16] = struct.pack("<HH", w16, h16)
        elif self.seed == "bmp":
            out[18:26] = struct.pack("<ii", min(self.width, 2**31 - 1), min(self.height, 2**31 - 1))
        elif self.seed == "mkv320":  # PixelWidth (B0) 320 and PixelHeight (BA) 240, 2 bytes
            out = bytearray(
                data.replace(b"\xb0\x82\x01\x40", b"\xb0\x82" + struct.pack(">H", w16)).replace(
                    b"\xba\x82\x00\xf0", b"\xba\x82" + struct.pack(">H", h16)
                )
            )
        elif self.seed == "mp4":  # the avc1 sample entry's width and height
            at = data.find(b"avc1")
            if at > 0:
                out[at + 28 : at + 32] = struct.pack(">HH", w16, h16)
        return out


@dataclass(frozen=True)
class BadSubtitles(Mutation):
    """Pathological cues: ``text`` repeated to ``size`` characters, in an SRT sidecar next
    to a copy of the seed, or (``embedded``) as the raw SubRip packets of the MKV seed;
    ``end_s`` may claim a day; ``count`` cues."""

    text: str
    size: int
    embedded: bool
    end_s: float = 1.0
    count: int = 1

    def write(self, seeds: dict[str, Path], stem: Path) -> Path:
        body = (self.text * (self.size // max(1, len(self.text)) + 1))[: self.size]
        if self.embedded:
            return self._embed(seeds["mkv"], stem.with_suffix(".mkv"), body.encode())
        video = stem.with_suffix(SUFFIX[self.seed])
        shutil.copyfile(seeds[self.seed], video)
        end = _srt_clock(self.end_s)
        blocks = [f"{k + 1}\n00:00:00,100 --> {end}\n{body}\n" for k in range(self.count)]
        video.with_suffix(".srt").write_text("\n".join(blocks), encoding="utf-8")
        return video

    def _embed(self, seed: Path, path: Path, body: bytes) -> Path:
        """Packets written as they are: FFmpeg's SubRip encoder parses the text again, in
        time quadratic in a cue like these."""
        with av.open(str(seed)) as src, av.open(str(path), "w", format="matroska") as out:
            streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
            cues = 0
            for packet in src.demux():
                if packet.dts is None:
                    continue
                target = streams[packet.stream.index]
                if packet.stream.type == "subtitle":
                    if cues >= self.count:
                        continue
                    cue = av.Packet(body)
                    cue.pts = cue.dts = packet.pts + cues
                    cue.time_base = packet.time_base
                    cue.duration = max(1, round(self.end_s / packet.time_base) - cue.pts)
                    packet, cues = cue, cues + 1
                packet.stream = target
                out.mux(packet)
        return path


def _srt_clock(seconds: float) -> str:
    ms = min(round(seconds * 1000), 99 * 3_600_000 + 3_599_999)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


@dataclass(frozen=True)
class Noise(Mutation):
    """``size`` bytes of noise (0: an empty file) under a seed's suffix."""

    size: int
    salt: int = 0

    def mutate(self, data: bytes, seeds: dict[str, Path]) -> bytes:
        return random.Random(self.salt).randbytes(self.size)


# --------------------------------------------------------------------------- strategies

fraction = st.floats(0, 1, allow_nan=False)
byte_seed = st.sampled_from(BYTE_SEEDS)

byte_mutations = st.one_of(
    st.builds(Truncate, byte_seed, fraction),
    st.builds(
        FlipBits, byte_seed, st.lists(fraction, min_size=1, max_size=64).map(tuple), st.booleans()
    ),
    st.builds(
        Overwrite,
        byte_seed,
        fraction,
        st.one_of(
            st.binary(min_size=1, max_size=2048),
            st.sampled_from([b"\x00" * 1024, b"\xff" * 1024, b"\x47" * 188]),
        ),
    ),
    st.builds(Splice, byte_seed, byte_seed, fraction, fraction),
)

jump = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([5.0, 59.0, 61.0, 1e3, 1e6, 1e9, -3.0]),
)
timestamp_mutations = st.one_of(
    st.builds(
        Remux,
        st.sampled_from(REMUX_SEEDS),
        st.integers(0, 40),
        jump,
        stream=st.none() | st.integers(0, 2),
        offset_s=st.sampled_from([0.0, 0.0, 120.0, 1e6]),
        base_s=st.sampled_from([0.0, 0.0, PTS_WRAP_S - 0.7, 1e5]),
        drop_pts=st.sampled_from([0, 0, 3, 7]),
        cue_s=st.none() | st.sampled_from([0.0, 1e6, -5.0]),
    ),
    st.builds(
        PatchTimes,
        st.sampled_from(REMUX_SEEDS),
        st.lists(fraction, min_size=1, max_size=8).map(tuple),
        first=st.integers(0, 20),
        every=st.integers(1, 10),
    ),
)

size = st.one_of(
    st.integers(0, 70_000), st.sampled_from([0, 1, 8192, 8193, 16384, 65535, 100_000, 2**31])
)
header_mutations = st.builds(
    HugeSize, st.sampled_from(("y4m", "ivf", "bmp", "mkv320", "mp4")), size, size
)

subtitle_mutations = st.builds(
    BadSubtitles,
    st.sampled_from(("mkv", "mp4", "ts")),
    st.sampled_from(["{", "<a", "<", "{\\i1}x", "</", "&amp;", "\\N"]),
    st.sampled_from([10, 2000, 5000, 100_000, BIG_CUE]),
    st.booleans(),
    end_s=st.sampled_from([1.0, 0.05, 86_400.0, 359_999.0]),
    count=st.sampled_from([1, 1, 3]),
)

noise_mutations = st.builds(
    Noise, byte_seed, st.sampled_from([0, 1, 16, 188, 4096, 65536]), st.integers(0, 2**16)
)


def corpus() -> list[Mutation]:
    """The cases the issue names, always run (hypothesis draws the rest around them)."""
    cases: list[Mutation] = [Noise(seed, 0) for seed in BYTE_SEEDS]
    cases += [Remux(seed, 10, 1e6) for seed in REMUX_SEEDS]
    cases += [Remux("ts", 0, 0.0, base_s=PTS_WRAP_S - 0.7)]
    cases += [HugeSize(seed, 100_000, 100_000) for seed in ("y4m", "ivf", "bmp", "mkv320")]
    cases += [HugeSize("ivf", 65535, 65535), HugeSize("mp4", 65535, 65535)]
    for text in ("{", "<a"):
        cases += [BadSubtitles("mkv", text, BIG_CUE, embedded=True)]
        cases += [BadSubtitles("mp4", text, BIG_CUE, embedded=False)]
    cases += [BadSubtitles("mkv", "x", 10, embedded=False, end_s=359_999.0)]
    return cases


FAMILIES: dict[str, st.SearchStrategy[Mutation]] = {
    "bytes": byte_mutations,
    "timestamps": timestamp_mutations,
    "headers": header_mutations,
    "subtitles": subtitle_mutations,
    "noise": noise_mutations,
}


def draw(strategy: st.SearchStrategy[Mutation], n: int) -> list[Mutation]:
    """``n`` values of ``strategy``, the same on every run (for the service part and the
    benchmark, which need the inputs up front rather than one example at a time)."""
    drawn: list[Mutation] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(mutation: Mutation) -> None:
        drawn.append(mutation)

    collect()
    return drawn
