"""Subtitle cue recall and description-track reading speed, for tests and benchmarks/quality.py.

Cue recall: generated clips with text cues embedded (MKV SubRip, MP4 mov_text) or beside them
(.srt, .vtt), some muxed late behind later audio and video (the shape that lost a cue), go
through the real analysis loop (decode, windows, fusion, records) with ``NullEncoders`` in
place of the models, and every (cue, window it overlaps) pair is looked up in that window's
``subtitles``. Reading speed: characters per second of each cue of a description track.

``measure_cue_recall(folder, seed)`` and ``caption_cps_p95(srt_text)`` are what the
benchmark calls; the tests use the pieces.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from media import Cue, remux_with_subtitles, write_srt, write_video, write_vtt

from mmlm_stream.config import Config
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.pipeline.analysis import SourceAnalysis
from mmlm_stream.pipeline.encoding import FrameResults
from mmlm_stream.records.channels import AudioChunk, Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import AudioEncoding, FrameEncoding, SpeechInput, TranscriptSegment
from mmlm_stream.records.schema import WindowRecord

KINDS = ("mkv", "mp4", "srt", "vtt")
"""Where the cues are: embedded in MKV (SubRip) or MP4 (mov_text), or a sidecar file."""
_EPS = 1e-6


class NullEncoders:
    """The analysis loop's ``Encoders`` without models: frames and audio carry no labels and
    no speech, so a window's subtitles come from the decoder and windower alone."""

    channels = frozenset({Modality.VISUAL, Modality.AUDIO, Modality.SPEECH, Modality.SUBTITLES})

    def encode_frames(self, frames: Sequence[Frame]) -> FrameResults:
        return FrameResults([FrameEncoding(f.time, np.ones(4, np.float32)) for f in frames])

    def encode_audio(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        return [AudioEncoding(c.start, c.end, -60.0, -50.0) for c in chunks]

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]:
        return []

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return np.ones((len(texts), 4), np.float32)

    def model_ids(self) -> dict[str, str]:
        return {}


@dataclass
class CueCase:
    """One generated input and the cues it holds, in its own media time."""

    path: Path
    kind: str
    cues: list[Cue]
    delays: list[float] = field(default_factory=list)


def write_cue_case(
    path: Path,
    kind: str,
    cues: Sequence[Cue],
    *,
    duration_s: float = 6.0,
    delays: Sequence[float] | None = None,
    av_offset_s: float = 0.0,
) -> CueCase:
    """A small clip (64x48, 10 fps, mono 8 kHz audio) at ``path`` (its suffix is replaced)
    carrying ``cues`` the ``kind`` way; embedded cue k is muxed ``delays[k]`` s late and
    audio/video start ``av_offset_s`` late (``media.remux_with_subtitles``)."""
    cues = sorted(cues, key=lambda c: (c.start, c.end))
    clip = dict(duration_s=duration_s, width=64, height=48, fps=10, audio_rate=8000)
    if kind in ("srt", "vtt"):
        video = write_video(path.with_suffix(".mkv"), audio_channels=1, **clip)
        (write_srt if kind == "srt" else write_vtt)(video.with_suffix(f".{kind}"), cues)
        return CueCase(video, kind, list(cues))
    plain = write_video(path.with_name(f"{path.stem}.plain.{kind}"), audio_channels=1, **clip)
    out = remux_with_subtitles(
        path.with_suffix(f".{kind}"), plain, cues, delays=delays, av_offset_s=av_offset_s
    )
    plain.unlink()
    return CueCase(out, kind, list(cues), list(delays or []))


def windows_of(path: Path, config: Config | None = None) -> list[WindowRecord]:
    """The window records the analysis loop makes of ``path`` with ``NullEncoders``."""
    records: list[WindowRecord] = []
    analysis = SourceAnalysis(
        resolve_source(str(path)),
        config or Config(),
        NullEncoders(),
        on_window=lambda output: records.append(output.window),
    )
    analysis.run()
    return records


def _start_time(path: Path) -> float:
    """Where the file's media time starts (the decoder reports times from there)."""
    with av.open(str(path)) as container:
        start = container.start_time
    return start / 1_000_000 if start else 0.0


@dataclass
class Recall:
    pairs: int = 0
    found: int = 0
    missed: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.found / self.pairs if self.pairs else 1.0

    def add(self, other: Recall) -> None:
        self.pairs += other.pairs
        self.found += other.found
        self.missed += other.missed


def cue_recall(case: CueCase, windows: Sequence[WindowRecord], hop_s: float = 2.0) -> Recall:
    """Every (cue, window it overlaps) pair, and those where the window holds the cue.

    A window [s, e) overlaps cue [a, b) when a < e and s < b (a cue of no length: s <= a < e);
    a window the analysis did not emit counts as missed for each cue it should hold. Times
    are the decoder's: from the container's start (``start_time``, which FFmpeg takes from
    the first packets it reads), a cue before it moved to it.
    """
    base = 0.0 if case.kind in ("srt", "vtt") else _start_time(case.path)
    size = windows[0].end - windows[0].start if windows else 4.0
    by_start = {round(w.start, 6): w for w in windows}
    result = Recall()
    for cue in case.cues:
        # Media time starts at the file's start; a cue before it shows from there.
        a = max(0.0, cue.start - base)
        b = a + cue.end - cue.start
        for k in range(max(0, int(np.floor((a - size) / hop_s))), int(np.ceil(b / hop_s)) + 1):
            start = k * hop_s
            if b - a > _EPS:
                overlaps = a < start + size - _EPS and start < b - _EPS
            else:
                overlaps = start - _EPS <= a < start + size - _EPS
            if not overlaps:
                continue
            result.pairs += 1
            window = by_start.get(round(start, 6))
            if window is not None and any(
                s.text == cue.text and abs(s.start - a) < 2e-3 for s in window.subtitles
            ):
                result.found += 1
            else:
                result.missed.append(
                    f"{case.path.name}: cue {cue.text!r} [{a:.3f}, {b:.3f}) not in "
                    f"window [{start:g}, {start + size:g})"
                )
    return result


def random_cues(rng: random.Random, duration_s: float, count: int, overlap: bool) -> list[Cue]:
    """Cues on a 0.1 s grid (so window edges come up), before, inside and after the clip."""
    cues: list[Cue] = []
    t = 0.0
    for n in range(count):
        start = round(rng.uniform(0, duration_s + 2.0), 1) if overlap else t
        length = rng.choice([0.1, 0.5, 1.0, 2.0, round(rng.uniform(0.1, 3.0), 1)])
        cues.append(Cue(start, round(start + length, 1), f"cue {n} {rng.choice(_WORDS)}"))
        t = round(start + length + rng.choice([0.0, 0.3, 1.0]), 1)
    return sorted(cues, key=lambda c: (c.start, c.end))


_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def cue_cases(folder: Path, seed: int = 13, per_kind: int = 3) -> list[CueCase]:
    """``per_kind`` clips of each kind with 2-5 random cues (before, inside and after the
    picture; overlapping but in MP4), some embedded cues muxed 3 or 12 s late."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for kind in KINDS:
        for n in range(per_kind):
            duration = rng.choice([6.0, 10.0, 20.0])
            cues = random_cues(rng, duration, rng.randint(2, 5), overlap=kind != "mp4")
            delays = [rng.choice([0.0, 0.0, 3.0, 12.0]) for _ in cues]
            path = folder / f"cues-{kind}{n}"
            cases.append(write_cue_case(path, kind, cues, duration_s=duration, delays=delays))
    return cases


def measure_cue_recall(folder: Path, seed: int = 13, per_kind: int = 3) -> tuple[float, Recall]:
    """Cue recall over ``cue_cases``: (recall, details). Decode, windows and records only."""
    total = Recall()
    for case in cue_cases(folder, seed, per_kind):
        total.add(cue_recall(case, windows_of(case.path)))
    return total.recall, total


_SRT_TIME = re.compile(r"(\d+):(\d+):(\d+)[,.](\d+)\s*-->\s*(\d+):(\d+):(\d+)[,.](\d+)")


def caption_rates(srt: str) -> list[float]:
    """Characters per second of display of each cue of an SRT (all characters, lines joined
    by a space, as a reader sees them)."""
    rates = []
    for block in re.split(r"\n\s*\n", srt.strip()):
        lines = block.strip().splitlines()
        times = next((m for line in lines if (m := _SRT_TIME.search(line))), None)
        if times is None:
            continue
        h, m, s, ms, h2, m2, s2, ms2 = (int(g) for g in times.groups())
        shown = (h2 * 3600 + m2 * 60 + s2 + ms2 / 1000) - (h * 3600 + m * 60 + s + ms / 1000)
        at = next(i for i, line in enumerate(lines) if _SRT_TIME.search(line))
        text = " ".join(line.strip() for line in lines[at + 1 :] if line.strip())
        if shown > 0 and text:
            rates.append(len(text) / shown)
    return rates


def caption_cps_p95(srt: str) -> float:
    """The 95th percentile of ``caption_rates`` (0 for an empty track)."""
    rates = caption_rates(srt)
    return float(np.percentile(rates, 95)) if rates else 0.0
