"""The inputs of ``benchmarks/quality.py``: every labelled case the real-media tests build.

Recorded speech (clean and under babble), real sound effects, generated clips with cues at
random times (MKV, MP4, sidecars) and the bundled sample, each with what is known to be in it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import real_sounds
import real_speech
import subtitle_cases

from mmlm_stream.cli.sample import write_sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from quality import Case, Heard, Said, Shown


def all_cases(folder: Path, seed: int) -> list[Case]:
    if not real_speech.ensure_available() or not real_sounds.ensure_available():
        raise SystemExit(f"real media missing: {real_speech.install_hint()}")
    cases = []
    for babble in (False, True):
        clip = real_speech.build_clip(folder / f"speech{'-babble' if babble else ''}.mkv", babble)
        said = [Said(u.text, u.start, u.end) for u in clip.utterances]
        cases.append(Case(clip.path, said=said, speech_scored=True))
    for clip in real_sounds.build_clips(folder / "sounds", seed=seed):
        heard = [Heard(t.key, t.start, t.end) for t in clip.truths]
        cases.append(Case(clip.path, heard=heard, sounds_scored=True))
    for cue_case in subtitle_cases.cue_cases(folder / "cues", seed):
        shown = [Shown(c.text, c.start, c.end) for c in cue_case.cues]
        cases.append(Case(cue_case.path, shown=shown))
    info = write_sample(folder / "sample.mkv")
    cases.append(Case(info.path, shown=[Shown(c.text, c.start, c.end) for c in info.cues]))
    return cases
