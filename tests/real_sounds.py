"""Labelled sound clips from real recorded sound effects and generated signals, with truths.

The real sounds ship in Debian packages: ``sound-theme-freedesktop`` (a phone ring, an alarm
clock whose tone is a pure 8.2 kHz beep pattern, dialog and message chimes) and
``oxygen-sounds`` (a ringtone melody, notification jingles). Generated signals give what has to
be exact: a 1 s crash-like noise burst at -7 dBFS, a >8 kHz beeper, pink and brown noise beds.

``CLIPS`` names each clip and what a listener would say is in it: ``(key, start, end)`` truths
with keys ``loud``, ``alarm``, ``ring``, ``beep``, ``doorbell``; ``absent`` lists keys that must
not be reported (a phone ring is no ``alarm``, a noise bed is no sound at all). ``build_clips``
writes them as short videos (H.264 + AAC 48 kHz, so the decoder sees native-rate audio above
8 kHz). ``tests/test_sounds.py`` and ``benchmarks/quality.py`` both use this module.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

PACKAGES = ("sound-theme-freedesktop", "oxygen-sounds", "asterisk-core-sounds-en-wav")
FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")
OXYGEN = Path("/usr/share/sounds")
VOICE = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
PROMPTS = ("vm-intro.wav", "conf-onlyperson.wav", "vm-nobodyavail.wav", "queue-thankyou.wav")
"""Recorded human speech (Asterisk's prompts) for the clip of speech at a normal level."""
RATE = 48_000
ROOM_DBFS = -66.0
"""Room tone under every clip (real recordings are never digitally silent)."""


@dataclass(frozen=True)
class Truth:
    key: str
    start: float
    end: float


@dataclass(frozen=True)
class SoundClip:
    """A written clip: where it is, how long, what is in it and what must not be reported."""

    name: str
    path: Path
    duration: float
    truths: tuple[Truth, ...]
    absent: frozenset[str]
    real: bool


@dataclass(frozen=True)
class _Recipe:
    name: str
    duration: float
    build: Callable[[np.random.Generator], tuple[np.ndarray, list[Truth]]]
    absent: frozenset[str] = field(default_factory=frozenset)
    real: bool = True


def read_sound(path: Path, rate: int = RATE) -> np.ndarray:
    """A packaged sound as float32 mono at ``rate``."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(audio=0)
            for out in resampler.resample(frame)
        ]
        parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def _rms_db(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(samples, dtype=np.float64))) + 1e-12))


def _at_level(samples: np.ndarray, dbfs: float) -> np.ndarray:
    return samples * 10 ** ((dbfs - _rms_db(samples)) / 20)


def _bed(seconds: float, rng: np.random.Generator, dbfs: float = ROOM_DBFS) -> np.ndarray:
    return _at_level(rng.standard_normal(round(seconds * RATE)), dbfs)


def _place(bed: np.ndarray, sound: np.ndarray, at: float) -> tuple[float, float]:
    i = round(at * RATE)
    n = min(sound.size, bed.size - i)
    bed[i : i + n] += sound[:n]
    return at, at + n / RATE


def coloured_noise(seconds: float, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power falling as 1/f**slope (0 white, 1 pink, 2 brown), unit RMS."""
    n = round(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (slope / 2), n)
    return noise / np.sqrt(np.mean(noise**2))


def crash(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A crash-like burst: broadband noise with a sharp attack and a decay, unit RMS."""
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    burst = rng.standard_normal(n) * np.exp(-t / (seconds / 2.5)) * np.minimum(1.0, t / 0.003)
    return burst / np.sqrt(np.mean(burst**2))


def beeper(seconds: float, hz: float, on_s: float = 0.12, period_s: float = 0.5) -> np.ndarray:
    """A pure tone switched on for ``on_s`` every ``period_s`` (a beeper), amplitude 1."""
    t = np.arange(round(seconds * RATE)) / RATE
    ramp = np.clip(np.minimum(t % period_s, on_s - t % period_s) / 0.004, 0.0, 1.0)
    return np.sin(2 * np.pi * hz * t) * ((t % period_s) < on_s) * ramp


def _repeat(sound: np.ndarray, times: int, pause_s: float) -> np.ndarray:
    gap = np.zeros(round(pause_s * RATE), np.float32)
    return np.concatenate([piece for _ in range(times) for piece in (sound, gap)][:-1])


Mix = Callable[[np.random.Generator], tuple[np.ndarray, list[Truth]]]


def _one(path: Path, key: str | None, at: float, seconds: float, times: int = 1) -> Mix:
    """The packaged sound at ``path`` (``times`` over, 0.8 s apart) at -20 dBFS RMS."""

    def build(rng: np.random.Generator) -> tuple[np.ndarray, list[Truth]]:
        bed = _bed(seconds, rng)
        sound = _at_level(_repeat(read_sound(path), times, 0.8), -20.0)
        start, end = _place(bed, sound, at)
        return bed, [Truth(key, start, end)] if key else []

    return build


def _burst(rng: np.random.Generator) -> tuple[np.ndarray, list[Truth]]:
    bed = _bed(8.0, rng)
    start, end = _place(bed, _at_level(crash(1.0, rng), -7.0), 4.5)
    return bed, [Truth("loud", start, end)]


def _high_beeper(rng: np.random.Generator) -> tuple[np.ndarray, list[Truth]]:
    bed = _bed(10.0, rng)
    start, end = _place(bed, 0.3 * beeper(5.0, 9_500.0), 2.5)
    return bed, [Truth("alarm", start, end)]


def _high_beep(rng: np.random.Generator) -> tuple[np.ndarray, list[Truth]]:
    bed = _bed(8.0, rng)
    start, end = _place(bed, 0.3 * beeper(0.12, 9_500.0), 3.3)
    return bed, [Truth("beep", start, end)]


def _speech(rng: np.random.Generator) -> tuple[np.ndarray, list[Truth]]:
    """Four prompts 0.7 s apart, their speech at -18 dBFS RMS (the loud end of normal)."""
    gaps = [np.zeros(round(0.7 * RATE), np.float32)]
    pieces = [read_sound(VOICE / name) for name in PROMPTS]
    active = np.concatenate(pieces)
    voice = np.concatenate([x for piece in pieces for x in (piece, *gaps)])
    voice = voice * 10 ** ((-18.0 - _rms_db(active)) / 20)
    bed = _bed(voice.size / RATE + 2.0, rng)
    _place(bed, voice, 1.0)
    return bed, []


def _two_tone_alarm(rng: np.random.Generator) -> tuple[np.ndarray, list[Truth]]:
    """The bundled sample's alarm: 900 and 1200 Hz in turn, a quarter second each, for 3 s."""
    bed = _bed(10.0, rng)
    t = np.arange(round(0.25 * RATE)) / RATE
    tones = [np.sin(2 * np.pi * (900.0, 1200.0)[k % 2] * t) for k in range(12)]
    start, end = _place(bed, 0.25 * np.concatenate(tones), 3.0)
    return bed, [Truth("alarm", start, end)]


def _short_beep(rng: np.random.Generator) -> tuple[np.ndarray, list[Truth]]:
    """The bundled sample's beep: 1 kHz for 150 ms."""
    bed = _bed(8.0, rng)
    t = np.arange(round(0.15 * RATE)) / RATE
    start, end = _place(bed, 0.3 * np.sin(2 * np.pi * 1000.0 * t), 3.3)
    return bed, [Truth("beep", start, end)]


def _noise(slope: float, dbfs: float) -> Mix:
    def build(rng: np.random.Generator) -> tuple[np.ndarray, list[Truth]]:
        return _at_level(coloured_noise(10.0, slope, rng), dbfs), []

    return build


_ALL_KEYS = frozenset({"alarm", "ring", "beep", "doorbell", "siren", "knock", "loud"})
_NOT_ALARM = frozenset({"alarm", "loud"})
_NOT_RING = frozenset({"ring", "loud"})


def _real(name: str, path: Path, key: str | None, seconds: float, absent: frozenset[str],
          times: int = 1, at: float = 2.0) -> _Recipe:  # fmt: skip
    return _Recipe(name, seconds, _one(path, key, at, seconds, times), absent)


RECIPES: tuple[_Recipe, ...] = (
    _real("phone_ring", FREEDESKTOP / "phone-incoming-call.oga", "ring", 10.0, _NOT_ALARM, 3),
    _real("ringtone", OXYGEN / "Oxygen-Im-Phone-Ring.ogg", "ring", 10.0, _NOT_ALARM),
    _real("alarm_clock", FREEDESKTOP / "alarm-clock-elapsed.oga", "alarm", 10.0, _NOT_RING),
    _real("single_beep", FREEDESKTOP / "message.oga", None, 8.0, _NOT_ALARM, at=3.3),
    _real("bell", FREEDESKTOP / "bell.oga", None, 8.0, _NOT_ALARM, at=3.3),
    _real("chime", FREEDESKTOP / "complete.oga", None, 8.0, _NOT_ALARM, at=3.3),
    _real("dialog_warning", FREEDESKTOP / "dialog-warning.oga", None, 8.0, _NOT_ALARM, at=3.3),
    _real("jingle", OXYGEN / "Oxygen-Sys-Warning.ogg", None, 8.0, _NOT_ALARM, at=3.0),
    _real("login_music", OXYGEN / "Oxygen-Sys-Log-In.ogg", None, 16.0, _NOT_ALARM, at=1.0),
    _Recipe("speech", 13.0, _speech, _NOT_ALARM),
    _Recipe("two_tone_alarm", 10.0, _two_tone_alarm, _NOT_RING, real=False),
    _Recipe("short_beep", 8.0, _short_beep, _NOT_ALARM, real=False),
    _Recipe("crash_burst", 8.0, _burst, frozenset({"alarm", "ring"}), real=False),
    _Recipe("high_beeper", 10.0, _high_beeper, _NOT_RING, real=False),
    _Recipe("high_beep", 8.0, _high_beep, _NOT_ALARM, real=False),
    _Recipe("pink_noise", 10.0, _noise(1.0, -24.0), _ALL_KEYS, real=False),
    _Recipe("brown_noise", 10.0, _noise(2.0, -25.0), _ALL_KEYS, real=False),
    _Recipe("white_hiss", 10.0, _noise(0.0, -45.0), _ALL_KEYS, real=False),
)
"""Each clip: name, seconds, how to mix it, keys that must not be reported, real or generated."""


def available() -> bool:
    files = [FREEDESKTOP / "phone-incoming-call.oga", OXYGEN / "Oxygen-Im-Phone-Ring.ogg"]
    return all(f.is_file() for f in files + [VOICE / name for name in PROMPTS])


def install_hint() -> str:
    return f"sudo apt-get install -y --no-install-recommends {' '.join(PACKAGES)}"


def ensure_available() -> bool:
    """Install the packages the way run.sh installs apt packages, when root and apt allow."""
    if available():
        return True
    if shutil.which("apt-get") is not None:
        try:
            subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
                check=True,
                capture_output=True,
                timeout=300,
            )
        except (OSError, subprocess.SubprocessError):
            return False
    return available()


def write_clip(path: Path, audio: np.ndarray, fps: int = 2) -> Path:
    """A small video of ``audio`` (float mono at ``RATE``): 64x36 grey H.264 and AAC."""
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    duration = audio.size / RATE
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 36, "yuv420p"
        sound = out.add_stream("aac", rate=RATE, layout="mono")
        step = 1024
        schedule = [(i / fps, 0, i) for i in range(round(duration * fps))]
        schedule += [(s / RATE, 1, s) for s in range(0, audio.size, step)]
        image = np.full((36, 64, 3), 96, np.uint8)
        for _t, kind, index in sorted(schedule):
            if kind == 0:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = index, Fraction(1, fps)
                out.mux(video.encode(frame))
            else:
                block = np.ascontiguousarray(audio[index : index + step][None, :])
                aframe = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
                aframe.sample_rate, aframe.pts = RATE, index
                aframe.time_base = Fraction(1, RATE)
                out.mux(sound.encode(aframe))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
    return path


def build_clips(
    folder: Path, names: Sequence[str] | None = None, seed: int = 13, suffix: str = ".mp4"
) -> list[SoundClip]:
    """Write the clips (all, or those ``names``) into ``folder``; deterministic for a seed."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for k, recipe in enumerate(RECIPES):
        if names is not None and recipe.name not in names:
            continue
        audio, truths = recipe.build(np.random.default_rng(seed + k))
        path = write_clip(folder / f"{recipe.name}{suffix}", audio)
        clips.append(
            SoundClip(
                recipe.name, path, audio.size / RATE, tuple(truths), recipe.absent, recipe.real
            )
        )
    return clips
