"""Which sounds a window holds, by name, from patch-level tags and native-rate tones.

Max-pooled tags misname sounds: YAMNet's "Alarm" is AudioSet's parent of phones, doorbells and
sirens (a phone ring scores Telephone 0.99 and Alarm 0.95), one 150 ms beep lights up two
0.96 s patches, music with a bell carries bell and alarm tags, and pink noise is "Waterfall".
So each YAMNet patch is read on its own (``label_groups`` families), and then:

- "Alarm" counts for an ``alarm`` only when no more specific family (ring, doorbell, siren)
  reaches half its score, and alarm-like evidence (alarm family or beep) counts in a patch only
  above music there;
- ``alarm`` needs that evidence in ``LASTING_PATCHES`` consecutive patches (about 2 s) with
  ``ALARM_MIN_SOUNDING_S`` of sound in them; shorter alarm-like evidence is a ``beep``. How
  long a sound sounds comes from the 100 ms level envelope: the blocks within ``ON_DB`` of
  the loudest (a 150 ms beep lights up three patches but sounds for 0.2 s). Other families
  need ``Sound.min_seconds`` of sound (a ring 1 s: YAMNet calls one 150 ms beep or a 0.5 s
  warning tone "Telephone" or "Dial tone");
- a non-urgent family (speech and music aside) counts only when it outscores every noise tag
  ("Pink noise", "Static", ...) of the window's patches, and not at all in a window of steady
  noise (``steady_noise``): hiss, a fan or room tone is no "water";
- the decoder's high tones (operators/tones.py) add an ``alarm`` for a pitch that beeps on and
  off for about 2 s or more, unless music leads the window; a short one is a ``beep`` when it
  is above ``MIN_BEEP_HZ`` (lower ones YAMNet hears itself, and a chime's partials are tones
  too), no bell explains it, and it is not a beeping that may still grow into an alarm at the
  end of the window (the next window decides).

Pure; the result is ``FusedWindow.sounds`` for the event engine and the describer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mmlm_stream.operators.loudness import ENVELOPE_STEP_S
from mmlm_stream.operators.tones import MAX_PAUSE_S, tone_pattern
from mmlm_stream.records.evidence import HeardSound
from mmlm_stream.records.label_groups import (
    NOISE_TAGS,
    SOUND_BY_KEY,
    ignored_sound,
    parts,
    sound_of,
)
from mmlm_stream.records.results import AudioEncoding, AudioTags, Label

PATCH_FLOOR = 0.2
"""A family counts in a patch from this score."""
LASTING_PATCHES = 3
"""Consecutive patches (0.96 s on a 0.48 s grid: 1.9 s of audio) that make evidence last."""
SPECIFIC_SHARE = 0.5
"""A ring, doorbell or siren at this share of the "Alarm" tag's score explains that tag."""
MUSIC_LEADS = 0.5
"""Music at this score in a window keeps its high tones from being an alarm."""
STATIONARY_DB = 6.0
"""Chunk levels (RMS and loudest 400 ms) that stay within this spread are a steady noise bed."""
ALARM_MIN_SOUNDING_S = 1.5
ON_DB = 12.0
"""A 100 ms block sounds when it is within this of the loudest block of the evidence."""
MIN_BEEP_HZ = 7_000.0
_GRID_SLACK_S = 0.6
_KEPT_IN_NOISE = frozenset({"speech", "music"})
_ALARM_LIKE = ("alarm", "beep")
_ALARM_CHILDREN = ("ring", "doorbell", "siren")


@dataclass(frozen=True, slots=True)
class _Patch:
    start: float
    end: float
    scores: dict[str, float]
    tags: dict[str, tuple[Label, ...]]


def _read(patch: AudioTags) -> _Patch:
    scores: dict[str, float] = {}
    tags: dict[str, list[Label]] = {}
    generic = 0.0
    generic_tag: Label | None = None
    for label in patch.labels:
        names = parts(label.label)
        if names == ("alarm",):
            if label.score > generic:
                generic, generic_tag = label.score, label
            continue
        if ignored_sound(label.label) or label.score < PATCH_FLOOR:
            continue
        sound = sound_of(label.label)
        if sound is not None:
            scores[sound.key] = max(scores.get(sound.key, 0.0), label.score)
            tags.setdefault(sound.key, []).append(label)
    children = max((scores.get(key, 0.0) for key in _ALARM_CHILDREN), default=0.0)
    if generic_tag is not None and generic >= PATCH_FLOOR and children < SPECIFIC_SHARE * generic:
        scores["alarm"] = max(scores.get("alarm", 0.0), generic)
        tags.setdefault("alarm", []).append(generic_tag)
    explains = max(scores.get("music", 0.0), scores.get("bell", 0.0))
    for key in list(scores):
        if key in _ALARM_LIKE and scores[key] <= explains:
            del scores[key]
    return _Patch(
        patch.start,
        patch.end,
        scores,
        {key: tuple(sorted(found, key=lambda lb: -lb.score)) for key, found in tags.items()},
    )


def _runs(patches: Sequence[_Patch], member: Iterable[bool]) -> list[list[_Patch]]:
    """Stretches of consecutive patches (on the patch grid, no patch missing) that qualify."""
    runs: list[list[_Patch]] = []
    previous: _Patch | None = None
    for patch, ok in zip(patches, member, strict=True):
        if ok:
            adjacent = previous is not None and patch.start - previous.start <= _GRID_SLACK_S
            if runs and adjacent and runs[-1][-1] is previous:
                runs[-1].append(patch)
            else:
                runs.append([patch])
        previous = patch
    return runs


def _evidence(run: Sequence[_Patch], keys: Sequence[str]) -> tuple[float, tuple[Label, ...]]:
    best: dict[str, Label] = {}
    for patch in run:
        for key in keys:
            for label in patch.tags.get(key, ()):
                if label.score > best.get(label.label, Label("", -1.0)).score:
                    best[label.label] = label
    ranked = tuple(sorted(best.values(), key=lambda lb: (-lb.score, lb.label)))
    score = max((p.scores.get(k, 0.0) for p in run for k in keys), default=0.0)
    return score, ranked[:5]


def _heard(key: str, runs: list[list[_Patch]], keys: Sequence[str]) -> HeardSound | None:
    if not runs:
        return None
    scored = [(_evidence(run, keys), run) for run in runs]
    (score, labels), _ = max(scored, key=lambda item: item[0][0])
    return HeardSound(
        key=key,
        score=round(score, 4),
        start=min(run[0].start for run in runs),
        end=max(run[-1].end for run in runs),
        lasting=any(len(run) >= LASTING_PATCHES for run in runs),
        evidence=labels,
    )


def steady_noise(encodings: Iterable[AudioEncoding]) -> bool:
    """Whether the audio is a steady noise bed (hiss, fan, room tone): YAMNet hears noise in
    some patch, and two chunks or more keep their RMS and loudest 400 ms each within
    ``STATIONARY_DB`` (pink noise wanders by about 5 dB from one second to the next)."""
    chunks = [c for c in encodings if c.end - c.start >= 0.5]
    if len(chunks) < 2 or _noise(chunks) < PATCH_FLOOR:
        return False
    rms = [c.rms_dbfs for c in chunks]
    short = [c.rms_dbfs if c.short_term_dbfs is None else c.short_term_dbfs for c in chunks]
    return max(rms) - min(rms) <= STATIONARY_DB and max(short) - min(short) <= STATIONARY_DB


def _noise(chunks: Iterable[AudioEncoding]) -> float:
    return max(
        (
            lb.score
            for c in chunks
            for p in c.patches
            for lb in p.labels
            if any(name in NOISE_TAGS for name in parts(lb.label))
        ),
        default=0.0,
    )


def _envelope(chunks: Iterable[AudioEncoding]) -> dict[float, float]:
    """Media time of each 100 ms block -> its level, over the window's chunks."""
    blocks: dict[float, float] = {}
    for chunk in chunks:
        for k, level in enumerate(chunk.envelope_dbfs):
            blocks[round(chunk.start + k * ENVELOPE_STEP_S, 2)] = level
    return blocks


def _sounding(blocks: dict[float, float], run: Sequence[_Patch]) -> float:
    """Seconds of sound in the run's span; the whole span when no envelope was measured."""
    start, end = run[0].start, run[-1].end
    inside = [level for at, level in blocks.items() if start <= at < end]
    if not inside:
        return end - start
    loudest = max(inside)
    return sum(level >= loudest - ON_DB for level in inside) * ENVELOPE_STEP_S


def hear(
    encodings: Iterable[AudioEncoding], window_end: float | None = None
) -> tuple[HeardSound, ...]:
    """The named sounds of a window's audio encodings, best first.

    Alarm-like evidence too short for an alarm that runs into the last ``MAX_PAUSE_S`` of the
    window (``window_end``; its audio reaching there) may be an alarm starting: the next
    window, which holds it whole, decides, so an alarm is not announced as a beep first."""
    chunks = list(encodings)
    audio_end = max((c.end for c in chunks), default=0.0)
    cut = window_end is not None and audio_end >= window_end - 0.1
    horizon = (window_end if window_end is not None else audio_end) - MAX_PAUSE_S
    unique = {round(p.start, 3): p for chunk in chunks for p in chunk.patches}
    patches = [_read(unique[key]) for key in sorted(unique)]
    steady, noise = steady_noise(chunks), _noise(chunks)
    for patch in patches:
        for key in list(patch.scores):
            if key in _KEPT_IN_NOISE or SOUND_BY_KEY[key].urgent:
                continue
            if steady or patch.scores[key] <= noise:
                del patch.scores[key]
    found: dict[str, HeardSound] = {}

    alarm_like = [max((p.scores.get(k, 0.0) for k in _ALARM_LIKE), default=0.0) for p in patches]
    blocks = _envelope(chunks)
    runs = _runs(patches, (score > 0 for score in alarm_like))
    lasting = [
        run
        for run in runs
        if len(run) >= LASTING_PATCHES and _sounding(blocks, run) >= ALARM_MIN_SOUNDING_S
    ]
    brief = [
        run
        for run in runs
        if not any(run is kept for kept in lasting) and not (cut and run[-1].end > horizon)
    ]
    if (alarm := _heard("alarm", lasting, _ALARM_LIKE)) is not None:
        found["alarm"] = alarm
    if (beep := _heard("beep", brief, _ALARM_LIKE)) is not None:
        found["beep"] = HeardSound(beep.key, beep.score, beep.start, beep.end, False, beep.evidence)

    others = sorted({k for p in patches for k in p.scores} - set(_ALARM_LIKE))
    for key in others:
        runs = _runs(patches, (key in p.scores for p in patches))
        need = SOUND_BY_KEY[key].min_seconds
        runs = [run for run in runs if not need or _sounding(blocks, run) >= need]
        heard = _heard(key, runs, (key,))
        if heard is not None:
            found[key] = heard

    music = max((p.scores.get("music", 0.0) for p in patches), default=0.0)
    bell = max((p.scores.get("bell", 0.0) for p in patches), default=0.0)
    pattern = tone_pattern(t for chunk in chunks for t in chunk.tones)
    if pattern is not None and pattern.kind == "beep":
        still_going = cut and pattern.onsets > 1 and pattern.end > horizon
        if bell >= MUSIC_LEADS or pattern.hz < MIN_BEEP_HZ or still_going:
            pattern = None
    if pattern is not None and music < MUSIC_LEADS:
        tone = HeardSound(
            key=pattern.kind,
            score=round(pattern.score, 4),
            start=pattern.start,
            end=pattern.end,
            lasting=pattern.kind == "alarm",
            evidence=(Label(f"Tone {pattern.hz / 1000:.1f} kHz", round(pattern.score, 4)),),
        )
        current = found.get(tone.key)
        if current is None or tone.score > current.score:
            found[tone.key] = tone
    if "alarm" in found:
        found.pop("beep", None)  # the beeps are the alarm
    if "beep" in found and found["beep"].score <= bell:
        del found["beep"]  # a chime's attack reads as a beep in some patches
    return tuple(sorted(found.values(), key=lambda h: (-h.score, h.key)))
