"""Generate the bundled sample video from material that ships in installed packages.

No media is committed to the repository, so tests, demos and benchmarks build this MKV on
demand: six photos from ``skimage.data`` with a slow Ken-Burns motion and hard cuts between
them, an AAC track with speech (espeak-ng, when installed), beeps, an alarm and near-silence,
and an embedded English SubRip track whose cues match what is spoken. Output is deterministic.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import skimage.data

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
AUDIO_FRAME = 1024
SEED = 20_240_611
ESPEAK_RATE = 150
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class SampleSegment:
    """One photo shown from ``start`` to ``end`` seconds; boundaries are hard cuts."""

    start: float
    end: float
    photo: str


@dataclass(frozen=True)
class SampleCue:
    """One subtitle cue; ``text`` may hold SubRip markup such as ``<i>``."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class SampleInfo:
    """What was written, so tests can compare decoded output against ground truth."""

    path: Path
    duration: float
    width: int
    height: int
    fps: int
    segments: tuple[SampleSegment, ...]
    cues: tuple[SampleCue, ...]
    speech: bool
    alarms: tuple[tuple[float, float], ...] = ()
    """(start, end) of each loud alarm, in seconds."""


@dataclass(frozen=True)
class _Scene:
    """A photo, its motion (centre and zoom from -> to) and its sounds, in segment fractions."""

    photo: str
    centre: tuple[tuple[float, float], tuple[float, float]]
    zoom: tuple[float, float]
    cue: tuple[float, float, str] | None = None
    beep: float | None = None
    alarm: tuple[float, float] | None = None


_SCENES = (
    _Scene("chelsea", ((0.45, 0.5), (0.6, 0.45)), (1.0, 0.8),
           (0.1, 0.7, "Here is a cat with bright green eyes."), beep=0.84),
    _Scene("coffee", ((0.5, 0.45), (0.5, 0.55)), (0.85, 1.0),
           (0.1, 0.7, "A cup of coffee sits on the table."), beep=0.84),
    _Scene("astronaut", ((0.5, 0.3), (0.42, 0.3)), (1.0, 0.8),
           (0.08, 0.72, "An <i>astronaut</i> smiles next to a flag."), beep=0.84),
    _Scene("rocket", ((0.3, 0.5), (0.7, 0.5)), (0.8, 0.8),
           (0.48, 0.98, "Warning, the alarm is sounding."), alarm=(0.04, 0.44)),
    _Scene("camera", ((0.5, 0.4), (0.45, 0.35)), (1.0, 0.7),
           (0.52, 0.98, "A man holds an old camera.")),
    _Scene("hubble_deep_field", ((0.4, 0.4), (0.6, 0.6)), (0.6, 0.9),
           (0.1, 0.75, "Thousands of galaxies glow in deep space.")),
)  # fmt: skip


def write_sample(
    out: str | Path,
    *,
    duration_s: float = 30.0,
    width: int = 640,
    height: int = 360,
    fps: int = 25,
    speech: bool | None = None,
) -> SampleInfo:
    """Write the sample MKV to ``out`` atomically and describe its contents.

    ``speech=None`` voices the cues when espeak-ng is on PATH; ``True`` insists on it.
    """
    if duration_s < len(_SCENES):
        raise ValueError(f"sample duration must be at least {len(_SCENES)} s, got {duration_s}")
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"sample size must be positive and even for yuv420p: {width}x{height}")
    espeak = shutil.which("espeak-ng")
    if speech and espeak is None:
        raise RuntimeError("speech=True but espeak-ng is not installed (apt-get install espeak-ng)")
    speech = espeak is not None if speech is None else speech

    n_frames = round(duration_s * fps)
    bounds = [round(k * n_frames / len(_SCENES)) for k in range(len(_SCENES) + 1)]
    segments = tuple(
        SampleSegment(bounds[k] / fps, bounds[k + 1] / fps, scene.photo)
        for k, scene in enumerate(_SCENES)
    )
    cues = tuple(
        SampleCue(_at(seg, scene.cue[0]), _at(seg, scene.cue[1]), scene.cue[2])
        for seg, scene in zip(segments, _SCENES, strict=True)
        if scene.cue is not None
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.mkv")
    with tempfile.TemporaryDirectory(prefix="mmlm-sample-") as tmp:
        audio = _audio(segments, cues, n_frames / fps, Path(tmp) if speech else None)
        srt = Path(tmp) / "cues.srt"
        srt.write_text(_srt(cues), encoding="utf-8")
        try:
            _mux(partial, srt, audio, segments, bounds, width, height, fps)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    partial.replace(out)
    logger.info(
        "wrote sample %s (%.1f s, %d cues, speech=%s)", out, n_frames / fps, len(cues), speech
    )
    alarms = tuple(
        (_at(seg, scene.alarm[0]), _at(seg, scene.alarm[1]))
        for seg, scene in zip(segments, _SCENES, strict=True)
        if scene.alarm is not None
    )
    return SampleInfo(out, n_frames / fps, width, height, fps, segments, cues, speech, alarms)


def _at(seg: SampleSegment, fraction: float) -> float:
    """A time inside ``seg``, rounded to the millisecond so SubRip stores it exactly."""
    return round(seg.start + fraction * (seg.end - seg.start), 3)


def _srt(cues: tuple[SampleCue, ...]) -> str:
    def stamp(t: float) -> str:
        ms = round(t * 1000)
        return (
            f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
        )

    return "".join(
        f"{i}\n{stamp(c.start)} --> {stamp(c.end)}\n{c.text}\n\n" for i, c in enumerate(cues, 1)
    )


def _photo(name: str, width: int, height: int) -> np.ndarray:
    """The photo as RGB, scaled once so its widest 16:9 window is twice the output width.

    Cropping that larger image per frame keeps the integer crop steps below one output pixel.
    """
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = np.ascontiguousarray(image[:, :, :3].astype(np.uint8))
    h, w = image.shape[:2]
    scale = 2 * width / min(w, h * width / height)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    return frame.reformat(width=round(w * scale), height=round(h * scale)).to_ndarray()


def _window(image: np.ndarray, scene: _Scene, p: float, width: int, height: int) -> np.ndarray:
    """The Ken-Burns crop at progress ``p`` in [0, 1], eased so the motion starts gently."""
    p = p * p * (3 - 2 * p)
    h, w = image.shape[:2]
    zoom = scene.zoom[0] + (scene.zoom[1] - scene.zoom[0]) * p
    cw = min(w, round(min(w, h * width / height) * zoom))
    ch = min(h, round(cw * height / width))
    (x0, y0), (x1, y1) = scene.centre
    cx, cy = (x0 + (x1 - x0) * p) * w, (y0 + (y1 - y0) * p) * h
    left = int(np.clip(round(cx - cw / 2), 0, w - cw))
    top = int(np.clip(round(cy - ch / 2), 0, h - ch))
    return np.ascontiguousarray(image[top : top + ch, left : left + cw])


def _speak(text: str, tmp: Path, length_s: float) -> np.ndarray:
    """espeak-ng's voice for ``text``, trimmed, peak-normalised and resampled to fit the cue."""
    plain = _TAG.sub("", text)
    wav = tmp / "speech.wav"
    rate = ESPEAK_RATE
    while True:
        command = ["espeak-ng", "-v", "en", "-s", str(rate), "-w", str(wav), plain]
        subprocess.run(command, check=True, capture_output=True)
        with wave.open(str(wav), "rb") as f:
            src_rate, channels = f.getframerate(), f.getnchannels()
            pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
        voice = pcm.reshape(-1, channels).mean(axis=1).astype(np.float64)
        loud = np.flatnonzero(np.abs(voice) > 0.01 * max(np.abs(voice).max(), 1.0))
        voice = voice[loud[0] : loud[-1] + 1] if loud.size else voice[:0]
        if voice.size <= length_s * src_rate or rate >= 3 * ESPEAK_RATE:
            break
        rate = min(3 * ESPEAK_RATE, round(rate * voice.size / (length_s * src_rate) * 1.05))
        logger.debug("speeding up %r to %d wpm to fit its cue", plain, rate)
    n = min(round(voice.size * SAMPLE_RATE / src_rate), round(length_s * SAMPLE_RATE))
    voice = np.interp(np.arange(n) * src_rate / SAMPLE_RATE, np.arange(voice.size), voice)
    return 0.5 * voice / max(np.abs(voice).max(initial=0.0), 1e-9)


def _audio(
    segments: tuple[SampleSegment, ...],
    cues: tuple[SampleCue, ...],
    duration: float,
    tmp: Path | None,
) -> np.ndarray:
    """Mono float mix: a quiet noise bed, speech at cue times, beeps and one loud alarm."""
    rng = np.random.default_rng(SEED)
    mix = rng.normal(0.0, 0.003, round(duration * SAMPLE_RATE))

    def add(start: float, sound: np.ndarray) -> None:
        i = round(start * SAMPLE_RATE)
        mix[i : i + sound.size] += sound[: max(0, mix.size - i)]

    def tone(freq: float, seconds: float, level: float) -> np.ndarray:
        t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)
        return level * ramp * np.sin(2 * np.pi * freq * t)

    for seg, scene in zip(segments, _SCENES, strict=True):
        length = seg.end - seg.start
        if scene.beep is not None:
            add(seg.start + scene.beep * length, tone(1000.0, 0.15, 0.3))
        if scene.alarm is not None:
            a, b = (seg.start + f * length for f in scene.alarm)
            for k, start in enumerate(np.arange(a, b - 0.125, 0.25)):
                add(float(start), tone((900.0, 1200.0)[k % 2], 0.25, 0.7))
    if tmp is not None:
        for cue in cues:
            add(cue.start, _speak(cue.text, tmp, cue.end - cue.start))
    return np.clip(mix, -1.0, 1.0).astype(np.float32)


def _mux(
    path: Path,
    srt: Path,
    audio: np.ndarray,
    segments: tuple[SampleSegment, ...],
    bounds: list[int],
    width: int,
    height: int,
    fps: int,
) -> None:
    """Encode frame by frame, interleaving audio and subtitle packets in time order."""
    bitexact = {"fflags": "+bitexact"}  # fixed track UIDs, so equal calls give equal bytes
    with av.open(str(srt)) as sub_in, av.open(str(path), "w", container_options=bitexact) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = 2 * fps
        video.options = {"preset": "veryfast", "crf": "23"}
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        sound.bit_rate = 128_000
        subs = out.add_stream_from_template(sub_in.streams.subtitles[0])
        subs.metadata["language"] = "eng"
        pending = [p for p in sub_in.demux(sub_in.streams.subtitles[0]) if p.dts is not None]

        sent = 0
        for k, (seg, scene) in enumerate(zip(segments, _SCENES, strict=True)):
            image = _photo(seg.photo, width, height)
            first, last = bounds[k], bounds[k + 1]
            for i in range(first, last):
                t = i / fps
                while pending and float(pending[0].pts * pending[0].time_base) <= t:
                    packet = pending.pop(0)
                    packet.stream = subs
                    out.mux(packet)
                while sent < audio.size and sent < (i + 1) * SAMPLE_RATE / fps:
                    chunk = np.repeat(audio[None, sent : sent + AUDIO_FRAME], 2, axis=0)
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                    frame.sample_rate, frame.pts = SAMPLE_RATE, sent
                    out.mux(sound.encode(frame))
                    sent += AUDIO_FRAME
                crop = _window(image, scene, (i - first) / max(1, last - first - 1), width, height)
                frame = av.VideoFrame.from_ndarray(crop, format="rgb24")
                frame = frame.reformat(width=width, height=height, format="yuv420p")
                frame.pts = i
                out.mux(video.encode(frame))
        for packet in pending:
            packet.stream = subs
            out.mux(packet)
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
