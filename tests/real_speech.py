"""A real-speech test clip: recorded human prompts laid out like a conversation, with truths.

The prompts are Asterisk's recorded voice (Debian package ``asterisk-core-sounds-en-wav``,
``en_US_f_Allison``: 8 kHz telephone speech of one speaker). Their texts are Asterisk's own
prompt texts, checked by ear against one plain Whisper base pass per prompt. ``build_clip``
lays ten of them out with pauses of 1-2.8 s (a 53 s file, H.264 video and AAC audio), and
``babble=True`` mixes other prompts of the same package underneath at 10 dB SNR (several
voices at once, none of them the reference). ``wer`` is the word error rate; ``lost`` counts
utterances whose words a transcript misses for the most part. The lead's benchmark and
``test_real_speech.py`` both use this module.

Pure numpy and PyAV; no model here. ``plain_transcript`` runs a bare faster-whisper pass when
handed a model.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from real_sounds import read_sound

PACKAGE = "asterisk-core-sounds-en-wav"
SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
RATE = 48_000
"""Audio rate of the written file: the 8 kHz prompts upsampled, as a phone recording in a video."""
LEAD_S = 0.85
TAIL_S = 2.5
PAUSES_S = (2.77, 1.67, 1.88, 0.98, 2.29, 1.85, 1.87, 1.49, 2.65)
"""Silence between consecutive prompts, in order: the spread of a real conversation."""
ROOM_DBFS = -62.0
"""Room tone under everything (real recordings are never digitally silent)."""
BABBLE_SNR_DB = 10.0

PROMPTS: tuple[tuple[str, str], ...] = (
    (
        "followme/pls-hold-while-try.wav",
        "Please hold while I try to locate the person you are calling.",
    ),
    (
        "vm-intro.wav",
        "Please leave your message after the tone. When done, hang up, or press the pound key.",
    ),
    (
        "conf-onlyperson.wav",
        "You are currently the only person in this conference.",
    ),
    (
        "followme/status.wav",
        "The person you are calling is not at their desk. I will try to locate them for you.",
    ),
    (
        "queue-thankyou.wav",
        "Thank you for your patience.",
    ),
    (
        "followme/options.wav",
        "Press 1 to accept this call, or 2 to reject it.",
    ),
    (
        "vm-nobodyavail.wav",
        "Nobody is available to take your call at the moment.",
    ),
    (
        "followme/sorry.wav",
        "I'm sorry, but I was unable to locate the person you are calling.",
    ),
    (
        "all-circuits-busy-now.wav",
        "All circuits are busy now.",
    ),
    (
        "followme/call-from.wav",
        "Incoming call from",
    ),
)
"""(file under SOUNDS, what is said), in the order they are laid out."""

BABBLE: tuple[str, ...] = (
    "vm-login.wav",
    "privacy-prompt.wav",
    "vm-theperson.wav",
    "vm-passchanged.wav",
    "followme/no-recording.wav",
    "agent-loginok.wav",
    "vm-goodbye.wav",
    "pbx-transfer.wav",
)
"""Other prompts of the same voice, mixed three at a time as the babble under the speech."""


@dataclass(frozen=True)
class Utterance:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Clip:
    path: Path
    duration: float
    utterances: tuple[Utterance, ...]

    @property
    def text(self) -> str:
        return " ".join(u.text for u in self.utterances)


def available() -> bool:
    return all((SOUNDS / name).is_file() for name, _ in PROMPTS) and all(
        (SOUNDS / name).is_file() for name in BABBLE
    )


def install_hint() -> str:
    return f"sudo apt-get install -y --no-install-recommends {PACKAGE}"


def ensure_available() -> bool:
    """Install the package the way run.sh installs apt packages, when root and apt allow."""
    if available():
        return True
    if shutil.which("apt-get") is not None and Path("/proc/self").exists():
        try:
            subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE],
                check=True,
                capture_output=True,
                timeout=300,
            )
        except (OSError, subprocess.SubprocessError):
            return False
    return available()


def read_prompt(name: str, rate: int = RATE) -> np.ndarray:
    """One prompt as float32 mono at ``rate`` (resampled from its 8 kHz)."""
    return read_sound(SOUNDS / name, rate)


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def _babble(length: int, rate: int, seed: int) -> np.ndarray:
    """Three voices talking at once all through: the babble prompts back to back per voice."""
    rng = np.random.default_rng(seed)
    prompts = [read_prompt(name, rate) for name in BABBLE]
    out = np.zeros(length, np.float64)
    for _voice in range(3):
        position = int(rng.integers(0, rate))
        while position < length:
            prompt = prompts[int(rng.integers(len(prompts)))]
            stop = min(length, position + len(prompt))
            out[position:stop] += prompt[: stop - position]
            position = stop + int(rng.integers(rate // 10, rate // 3))
    return out


def mix(
    babble: bool = False, rate: int = RATE, seed: int = 13, count: int | None = None
) -> tuple[np.ndarray, list[Utterance]]:
    """The clip's audio (float32 mono) and where each prompt lies in it (the first
    ``count`` prompts only, when given)."""
    chosen = PROMPTS[:count]
    prompts = [read_prompt(name, rate) for name, _ in chosen]
    pauses = [*PAUSES_S[: len(chosen) - 1], TAIL_S]
    length = round(LEAD_S * rate) + sum(len(p) for p in prompts) + round(sum(pauses) * rate)
    audio = np.zeros(length, np.float64)
    utterances = []
    position = round(LEAD_S * rate)
    for (_, text), samples, pause in zip(chosen, prompts, pauses, strict=True):
        audio[position : position + len(samples)] = samples
        utterances.append(Utterance(position / rate, (position + len(samples)) / rate, text))
        position += len(samples) + round(pause * rate)
    speech_rms = _rms(np.concatenate(prompts))
    rng = np.random.default_rng(seed)
    audio += rng.standard_normal(length) * 10 ** (ROOM_DBFS / 20)
    if babble:
        noise = _babble(length, rate, seed)
        audio += noise * (speech_rms / _rms(noise)) * 10 ** (-BABBLE_SNR_DB / 20)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:
        audio *= 0.99 / peak
    return audio.astype(np.float32), utterances


def build_clip(path: str | Path, babble: bool = False, count: int | None = None) -> Clip:
    """Write the clip (MKV or MP4 by extension): 160x90 H.264 at 5 fps, AAC mono 48 kHz."""
    path = Path(path)
    audio, utterances = mix(babble, count=count)
    duration = len(audio) / RATE
    fps = 5
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 160, 90, "yuv420p"
        sound = out.add_stream("aac", rate=RATE, layout="mono")
        frames = round(duration * fps)
        step = 1024
        events = [(i / fps, 0, i) for i in range(frames)]
        events += [(s / RATE, 1, s) for s in range(0, len(audio), step)]
        for _t, kind, index in sorted(events):
            if kind == 0:
                shade = 40 + (index // (fps * 4)) * 20 % 180  # a new picture every 4 s
                image = np.full((90, 160, 3), shade, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = index, Fraction(1, fps)
                out.mux(video.encode(frame))
            else:
                block = audio[index : index + step][None, :]
                aframe = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(block), format="flt", layout="mono"
                )
                aframe.sample_rate, aframe.pts = RATE, index
                aframe.time_base = Fraction(1, RATE)
                out.mux(sound.encode(aframe))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
    return Clip(path, duration, tuple(utterances))


_NUMBERS = dict(enumerate("zero one two three four five six seven eight nine ten".split()))
_CONTRACTIONS = {
    "i'm": "i am",
    "you're": "you are",
    "we're": "we are",
    "they're": "they are",
    "it's": "it is",
    "that's": "that is",
    "don't": "do not",
    "can't": "can not",
    "cannot": "can not",
    "won't": "will not",
    "i'll": "i will",
    "you'll": "you will",
}


def words(text: str) -> list[str]:
    """Lower case, no punctuation, contractions and digits written out (Whisper's spellings
    vary there, the speech does not)."""
    out: list[str] = []
    for token in re.sub(r"[^\w\s']", " ", text.lower().replace("\u2019", "'")).split():
        token = token.strip("'")
        if token.isdigit() and int(token) in _NUMBERS:
            token = _NUMBERS[int(token)]
        out.extend(_CONTRACTIONS.get(token, token).split())
    return out


def wer(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> float:
    """Word error rate: word-level Levenshtein distance over the reference's word count."""
    ref = words(reference if isinstance(reference, str) else " ".join(reference))
    hyp = words(hypothesis if isinstance(hypothesis, str) else " ".join(hypothesis))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(len(ref), 1)


def lost(
    utterances: Sequence[Utterance],
    heard: Sequence[tuple[float, float, str]],
    slack_s: float = 0.5,
    share: float = 0.5,
) -> list[Utterance]:
    """Utterances of which a transcript (start, end, text spans) has less than ``share`` of
    the words, looking only at spans that overlap the utterance (``slack_s`` either side)."""
    missing = []
    for utterance in utterances:
        text = " ".join(
            t for s, e, t in heard if s < utterance.end + slack_s and e > utterance.start - slack_s
        )
        truth = words(utterance.text)
        got = set(words(text))
        if sum(w in got for w in truth) < share * len(truth):
            missing.append(utterance)
    return missing


def plain_transcript(model: object, path: str | Path) -> list[tuple[float, float, str]]:
    """One plain faster-whisper pass over the whole file: no VAD, no packing, greedy, English.

    ``model`` is a ``faster_whisper.WhisperModel``; segments as (start, end, text).
    """
    segments, _info = model.transcribe(  # type: ignore[attr-defined]
        str(path), beam_size=1, language="en", vad_filter=False
    )
    return [(s.start, s.end, s.text.strip()) for s in segments]
