"""What the service says about real and generated media, against the bare models run plainly.

One run builds the cases (recorded human speech, clean and under babble; real sound effects;
generated clips with subtitle cues at random times; the bundled sample), describes them all
cold with ``mmlm-stream describe`` as a user would, and in the same run:

- speech: plain faster-whisper (the same Whisper base, one pass over the whole file, no voice
  gating, no packing) against the service's transcript rebuilt from the windows' ``new_text``;
  word error rate of each against the known prompt texts, and utterances lost (fewer than half
  of an utterance's words found in the transcript around its time);
- sounds: the service's ``sound`` events against the truth intervals of each key (``loud``,
  ``alarm``, ``ring``), and a plain YAMNet baseline (tags max-pooled per 4 s window, alarm-like
  tags at 0.3) for the alarm precision;
- subtitles: every (cue, window it overlaps) pair found in that window's ``subtitles``;
- captions: characters per second of each cue of the description tracks (``.srt``).

Last line: ``wer_ratio=<ours/bare> utterances_lost=N cue_recall=R alarm_precision=P cps_p95=C``.
Targets: wer_ratio <= 1.0, 0 lost, 1.0, >= 0.9, <= 20.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmlm_stream.records.modality import Modality

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

WINDOW_S = 4.0
HOP_S = 2.0
BARE_ALARM_TAGS = (
    "Alarm",
    "Alarm clock",
    "Smoke detector, smoke alarm",
    "Fire alarm",
    "Buzzer",
    "Beep, bleep",
    "Siren",
    "Civil defense siren",
    "Car alarm",
    "Reversing beeps",
)
BARE_ALARM_THRESHOLD = 0.3
SOUND_KEYS = ("loud", "alarm", "ring")


@dataclass(frozen=True)
class Said:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Heard:
    key: str
    start: float
    end: float


@dataclass(frozen=True)
class Shown:
    text: str
    start: float
    end: float


@dataclass
class Case:
    """One input and what is known to be in it."""

    path: Path
    said: list[Said] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    shown: list[Shown] = field(default_factory=list)
    speech_scored: bool = False
    sounds_scored: bool = False


@dataclass
class Output:
    """What ``describe`` wrote for one input."""

    windows: list[dict]
    events: list[dict]
    srt: str


def words(text: str) -> list[str]:
    """Lower-case words, numbers spelled out, as the speech tests compare them."""
    from real_speech import words as normalised

    return normalised(text)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def lost_utterances(said: list[Said], spans: list[Said]) -> int:
    """Utterances of which fewer than half the words appear in text heard near their time."""
    lost = 0
    for truth in said:
        near = [s for s in spans if s.end >= truth.start - 1.0 and s.start <= truth.end + 1.0]
        found = set(words(" ".join(s.text for s in near)))
        want = words(truth.text)
        if sum(w in found for w in want) < len(want) / 2:
            lost += 1
    return lost


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_describe(cases: list[Case], out: Path) -> tuple[dict[str, Output], float]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    started = time.perf_counter()
    cmd = [
        str(Path(sys.executable).with_name("mmlm-stream")),
        "describe",
        *(str(c.path) for c in cases),
        "--out",
        str(out),
        "--force",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"describe failed ({done.returncode}): {done.stderr[-2000:]}")
    outputs = {}
    for case in cases:
        name = case.path.name
        srt = out / f"{name}.srt"
        outputs[name] = Output(
            _read_jsonl(out / f"{name}.windows.jsonl"),
            _read_jsonl(out / f"{name}.events.jsonl"),
            srt.read_text() if srt.is_file() else "",
        )
    return outputs, wall


def transcript_of(output: Output) -> tuple[str, list[Said]]:
    """The transcript a subscriber rebuilds: each window's ``new_text`` in order (the text of
    all segments, once each, for a producer without ``new_text``)."""
    text: list[str] = []
    spans: dict[tuple[float, str], Said] = {}
    for window in sorted(output.windows, key=lambda w: w["start"]):
        speech = window.get("speech", {})
        if "new_text" in speech:
            text.append(speech["new_text"])
        for seg in speech.get("segments", []):
            spans.setdefault(
                (seg["start"], seg["text"]), Said(seg["text"], seg["start"], seg["end"])
            )
    if not any("new_text" in w.get("speech", {}) for w in output.windows):
        text = [s.text for s in sorted(spans.values(), key=lambda s: s.start)]
    return " ".join(t for t in text if t), sorted(spans.values(), key=lambda s: s.start)


def audio_16k(path: Path) -> np.ndarray:
    from real_sounds import read_sound

    return read_sound(path, 16000)


def plain_whisper(cases: list[Case]) -> tuple[dict[str, list[Said]], float]:
    """One plain faster-whisper pass per file: the same weights, no gating, no packing."""
    from faster_whisper import WhisperModel

    from mmlm_stream.config.models import ModelsConfig
    from mmlm_stream.models.speech_faster_whisper import assemble_whisper_base

    folder = assemble_whisper_base(ModelsConfig().cache_dir)
    model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=2)
    started = time.perf_counter()
    heard = {}
    for case in cases:
        segments, _info = model.transcribe(audio_16k(case.path), language="en")
        heard[case.path.name] = [Said(s.text.strip(), s.start, s.end) for s in segments]
    return heard, time.perf_counter() - started


def plain_yamnet_alarms(cases: list[Case]) -> dict[str, list[Heard]]:
    """Windows where YAMNet's max-pooled alarm-like tags reach 0.3: the plain alarm detector."""
    from mmlm_stream.config.models import ModelsConfig
    from mmlm_stream.models.registry import load_encoder
    from mmlm_stream.records.channels import AudioChunk

    encoder = load_encoder(Modality.AUDIO, ModelsConfig(device="cpu"))
    alarms: dict[str, list[Heard]] = {}
    for case in cases:
        samples = audio_16k(case.path)
        chunks = [
            AudioChunk(case.path.name, i / 16000, samples[i : i + 16000], 16000, i // 16000)
            for i in range(0, len(samples), 16000)
        ]
        encodings = encoder.encode(chunks) if chunks else []
        found = []
        for k in range(max(0, int(np.ceil(len(samples) / 16000 / HOP_S)))):
            start = k * HOP_S
            best = 0.0
            for chunk, enc in zip(chunks, encodings, strict=True):
                if start <= chunk.start < start + WINDOW_S:
                    best = max(
                        [best] + [lab.score for lab in enc.labels if lab.label in BARE_ALARM_TAGS]
                    )
            if best >= BARE_ALARM_THRESHOLD:
                found.append(Heard("alarm", start, start + WINDOW_S))
        alarms[case.path.name] = found
    return alarms


def overlaps(a_start: float, a_end: float, b_start: float, b_end: float) -> bool:
    return a_start < b_end and b_start < a_end


def sound_scores(
    cases: list[Case], predicted: dict[str, list[Heard]], key: str
) -> tuple[float | None, float | None]:
    """(recall, precision) of one key over the cases whose sounds are labelled."""
    truths = hits = events = right = 0
    for case in cases:
        if not case.sounds_scored:
            continue
        want = [h for h in case.heard if h.key == key]
        got = [p for p in predicted.get(case.path.name, []) if p.key == key]
        truths += len(want)
        hits += sum(any(overlaps(w.start, w.end, p.start, p.end) for p in got) for w in want)
        events += len(got)
        right += sum(any(overlaps(w.start, w.end, p.start, p.end) for w in want) for p in got)
    recall = hits / truths if truths else None
    precision = right / events if events else (1.0 if truths == 0 else None)
    return recall, precision


MARKUP = re.compile(r"<[^>]*>|\{[^}]*\}")
"""SubRip/ASS styling in a cue's source text (``<i>``, ``{\\an8}``): not part of what it says."""


def cue_recall(cases: list[Case], outputs: dict[str, Output]) -> tuple[float, list[str]]:
    """The share of (cue, window it overlaps) pairs found in the window, and the misses."""
    pairs = found = 0
    missed = []
    for case in cases:
        for cue in case.shown:
            for window in outputs[case.path.name].windows:
                if overlaps(cue.start, cue.end, window["start"], window["end"]):
                    pairs += 1
                    texts = " ".join(s["text"] for s in window.get("subtitles", []))
                    said = words(MARKUP.sub("", cue.text))
                    if said == words(texts) or set(said) <= set(words(texts)):
                        found += 1
                    else:
                        missed.append(
                            f"{case.path.name}: cue {cue.start:.2f}-{cue.end:.2f} "
                            f"{cue.text!r} not in window {window['start']:.1f}"
                        )
    return (found / pairs if pairs else 1.0), missed


def caption_cps(srt: str) -> list[float]:
    from subtitle_cases import caption_rates

    return caption_rates(srt)


def build_cases(folder: Path, seed: int) -> list[Case]:
    """Every kind of case the helpers of the tests know how to make."""
    from quality_cases import all_cases

    return all_cases(folder, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", type=Path, help="build and describe in this folder, kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmlm-quality-") as scratch:
        tmp = args.keep or Path(scratch)
        media, out = Path(tmp) / "media", Path(tmp) / "out"
        media.mkdir(parents=True, exist_ok=True)
        cases = build_cases(media, args.seed)
        print(
            f"{len(cases)} inputs, {sum(len(c.said) for c in cases)} utterances, "
            f"{sum(len(c.heard) for c in cases)} sounds, {sum(len(c.shown) for c in cases)} cues"
        )
        outputs, wall = run_describe(cases, out)
        print(f"describe: {wall:.1f} s cold")
        speech_cases = [c for c in cases if c.speech_scored]
        bare, bare_wall = plain_whisper(speech_cases)
        print(f"plain faster-whisper: {bare_wall:.1f} s")
        errors_ours = errors_bare = total = lost_ours = lost_bare = 0
        print(f"{'input':34} {'WER ours':>9} {'WER bare':>9} {'lost ours':>10} {'lost bare':>10}")
        for case in speech_cases:
            ref = words(" ".join(s.text for s in case.said))
            ours_text, ours_spans = transcript_of(outputs[case.path.name])
            bare_spans = bare[case.path.name]
            e_ours = edit_distance(ref, words(ours_text))
            e_bare = edit_distance(ref, words(" ".join(s.text for s in bare_spans)))
            l_ours = lost_utterances(case.said, ours_spans)
            l_bare = lost_utterances(case.said, bare_spans)
            errors_ours, errors_bare, total = (
                errors_ours + e_ours,
                errors_bare + e_bare,
                total + len(ref),
            )
            lost_ours, lost_bare = lost_ours + l_ours, lost_bare + l_bare
            print(
                f"{case.path.name:34} {e_ours / len(ref):9.3f} {e_bare / len(ref):9.3f} "
                f"{l_ours:10d} {l_bare:10d}"
            )
        wer_ours, wer_bare = errors_ours / max(total, 1), errors_bare / max(total, 1)
        print(f"WER: ours {wer_ours:.3f}, plain faster-whisper {wer_bare:.3f}")
        predicted = {
            name: [
                Heard(e["key"], e["start"], e["end"]) for e in output.events if e["type"] == "sound"
            ]
            for name, output in outputs.items()
        }
        bare_alarms = plain_yamnet_alarms([c for c in cases if c.sounds_scored])
        print(f"{'sound key':10} {'recall':>7} {'precision':>10}")
        scores = {}
        for key in SOUND_KEYS:
            scores[key] = sound_scores(cases, predicted, key)
            recall, precision = scores[key]
            print(f"{key:10} {_fmt(recall):>7} {_fmt(precision):>10}")
        b_recall, b_precision = sound_scores(cases, bare_alarms, "alarm")
        print(f"{'alarm bare':10} {_fmt(b_recall):>7} {_fmt(b_precision):>10}  (YAMNet max-pooled)")
        recall_cues, missed = cue_recall(cases, outputs)
        for line in missed[:10]:
            print(f"  missed: {line}")
        print(
            f"subtitle cue recall: {recall_cues:.3f} over {sum(len(c.shown) for c in cases)} cues"
        )
        rates = [r for o in outputs.values() for r in caption_cps(o.srt)]
        cps_p95 = float(np.percentile(rates, 95)) if rates else 0.0
        print(
            f"caption characters per second: p50 {np.percentile(rates, 50) if rates else 0:.1f}, "
            f"p95 {cps_p95:.1f} over {len(rates)} cues"
        )
        ratio = wer_ours / max(wer_bare, 0.01)
        alarm_precision = scores["alarm"][1]
        print(
            f"wer_ratio={ratio:.2f} utterances_lost={lost_ours} cue_recall={recall_cues:.2f} "
            f"alarm_precision={_fmt(alarm_precision)} cps_p95={cps_p95:.1f}"
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
