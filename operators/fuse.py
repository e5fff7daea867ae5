"""Pool each modality of a closed window and build the fused vector.

Frames: embeddings mean and max, label scores max over the window; a score that drops
decays from the previous window's instead of falling at once, so one bad frame does not
flip the labels. Audio: tags max over chunks, loudness as the power mean (RMS), the max peak
and the max short-term (400 ms) level, named sounds from the patches and tones
(operators/sounds.py), speech spans clipped to the window.
Text: transcript segments (words inside the window when word times exist), overlapping
subtitle cues, distinct OCR lines. The fused vector concatenates the L2-normalised modality
vectors (zeros when a modality is missing) and is normalised again.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from mmlm_stream.operators.sounds import hear
from mmlm_stream.records.channels import SubtitleCue
from mmlm_stream.records.evidence import FusedWindow, WindowContents
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import (
    AudioEncoding,
    DetectionResult,
    FrameEncoding,
    Label,
    OcrResult,
    SeenObject,
    TimeSpan,
    TranscriptSegment,
)

TextEmbedder = Callable[[Sequence[str]], np.ndarray]


def _normalised(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)


def _max_labels(groups: Iterable[Iterable[Label]]) -> dict[str, float]:
    best: dict[str, float] = {}
    for labels in groups:
        for label in labels:
            if label.score > best.get(label.label, -1.0):
                best[label.label] = label.score
    return best


def _top(scores: dict[str, float], k: int, floor: float = 0.0) -> tuple[Label, ...]:
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(Label(name, round(score, 4)) for name, score in ranked[:k] if score > floor)


def best_objects(results: Iterable[DetectionResult], k: int) -> tuple[SeenObject, ...]:
    """The ``k`` best-scoring labels of the detections, each with its best detection's box
    and frame time (ties: the earlier frame)."""
    best: dict[str, SeenObject] = {}
    for result in results:
        for d in result.detections:
            held = best.get(d.label)
            if held is None or d.score > held.score:
                best[d.label] = SeenObject(d.label, d.score, d.box, result.time)
    ranked = sorted(best.values(), key=lambda o: (-o.score, o.label))
    return tuple(
        SeenObject(o.label, round(o.score, 4), tuple(round(v, 4) for v in o.box), o.time)  # type: ignore[arg-type]
        for o in ranked[:k]
        if o.score > 0.0
    )


def _power_mean_db(values_db: Sequence[float]) -> float:
    power = np.mean([10 ** (v / 10) for v in values_db])
    return float(10 * np.log10(power)) if power > 0 else -120.0


def _merge(spans: Iterable[TimeSpan], gap: float = 0.05) -> tuple[TimeSpan, ...]:
    merged: list[TimeSpan] = []
    for span in sorted(spans, key=lambda s: s.start):
        if merged and span.start <= merged[-1].end + gap:
            merged[-1] = TimeSpan(merged[-1].start, max(merged[-1].end, span.end))
        else:
            merged.append(span)
    return tuple(merged)


def clip_segment(segment: TranscriptSegment, start: float, end: float) -> TranscriptSegment | None:
    """The part of a transcript segment inside [start, end); words decide when present."""
    if segment.words:
        words = tuple(w for w in segment.words if w.end > start and w.start < end)
        if not words:
            return None
        text = " ".join(w.text.strip() for w in words).strip()
        return TranscriptSegment(
            max(words[0].start, start),
            min(words[-1].end, end),
            text,
            segment.language,
            words,
            segment.confidence,
        )
    if segment.end <= start or segment.start >= end:
        return None
    return TranscriptSegment(
        max(segment.start, start),
        min(segment.end, end),
        segment.text.strip(),
        segment.language,
        (),
        segment.confidence,
    )


@dataclass
class FuseSettings:
    top_k: int = 5
    smoothing: float = 0.3
    min_label_score: float = 0.01
    hop_s: float | None = None


@dataclass
class _SourceState:
    smoothed: dict[str, float] = field(default_factory=dict)
    recent: list[tuple[float, np.ndarray]] = field(default_factory=list)


class Fuser:
    """Fuses closed windows in order; keeps per-source smoothing and the last frame seen."""

    def __init__(
        self, settings: FuseSettings | None = None, embed_text: TextEmbedder | None = None
    ) -> None:
        self.settings = settings or FuseSettings()
        self.embed_text = embed_text
        self._state: dict[str, _SourceState] = defaultdict(_SourceState)

    def fuse(self, contents: WindowContents, *, text_vector: bool = True) -> FusedWindow:
        """Pool ``contents``; ``text_vector=False`` skips embedding its text (an early look at
        a live window whose text comes with ``with_text`` when it closes)."""
        s = self.settings
        state = self._state[contents.source]
        frames = [f for f in contents.of(Modality.VISUAL) if isinstance(f, FrameEncoding)]
        chunks = [a for a in contents.of(Modality.AUDIO) if isinstance(a, AudioEncoding)]

        frame_mean = frame_max = None
        scene_change, scene_change_at = 0.0, None
        if frames:
            stack = np.stack([_normalised(f.embedding) for f in frames])
            frame_mean = _normalised(stack.mean(axis=0))
            frame_max = _normalised(stack.max(axis=0))
            scene_change, scene_change_at = self._scene_change(contents, state, frames, stack)
        current = _max_labels(f.labels for f in frames)
        # Rises count at once, drops decay: a label does not vanish on one bad frame.
        smoothed = {
            name: max(
                current.get(name, 0.0),
                (1 - s.smoothing) * current.get(name, 0.0)
                + s.smoothing * state.smoothed.get(name, 0.0),
            )
            for name in set(current) | set(state.smoothed)
        }
        state.smoothed = {n: v for n, v in smoothed.items() if v >= s.min_label_score}
        visual = _top({n: max(v, 0.0) for n, v in smoothed.items() if n in current}, s.top_k)

        objects = best_objects(
            (r for r in contents.of(Modality.OBJECTS) if isinstance(r, DetectionResult)), s.top_k
        )
        audio = _top(_max_labels(c.labels for c in chunks), s.top_k)
        rms = _power_mean_db([c.rms_dbfs for c in chunks]) if chunks else None
        peak = max(c.peak_dbfs for c in chunks) if chunks else None
        short = [c.short_term_dbfs for c in chunks if c.short_term_dbfs is not None]
        analysed = any(c.patches or c.tones for c in chunks)
        spans = _merge(
            TimeSpan(max(sp.start, contents.start), min(sp.end, contents.end))
            for c in chunks
            for sp in c.speech
            if sp.end > contents.start and sp.start < contents.end
        )
        audio_mean = None
        embedded = [c.embedding for c in chunks if c.embedding.size]
        if embedded:
            audio_mean = _normalised(np.mean([_normalised(e) for e in embedded], axis=0))

        return self._with_text(
            FusedWindow(
                contents=contents,
                visual=visual,
                objects=objects,
                audio=audio,
                rms_dbfs=rms,
                peak_dbfs=peak,
                short_term_dbfs=max(short) if short else None,
                sounds=hear(chunks, contents.end) if analysed else None,
                speech_spans=spans,
                frame_mean=frame_mean,
                frame_max=frame_max,
                audio_mean=audio_mean,
                scene_change=scene_change,
                scene_change_at=scene_change_at,
            ),
            contents,
            text_vector,
        )

    def with_text(self, fused: FusedWindow, contents: WindowContents) -> FusedWindow:
        """``fused`` with the text of ``contents`` (the same window, closed later with the
        transcripts that were still on their way when it was first fused); stateless."""
        if contents.window_id != fused.window_id:
            raise ValueError(f"{contents.window_id} is not the window {fused.window_id}")
        return self._with_text(fused, contents, True)

    def _with_text(
        self, fused: FusedWindow, contents: WindowContents, text_vector: bool
    ) -> FusedWindow:
        transcript = tuple(
            clipped
            for seg in contents.of(Modality.SPEECH)
            if isinstance(seg, TranscriptSegment)
            and (clipped := clip_segment(seg, contents.start, contents.end)) is not None
            and clipped.text
        )
        subtitles = tuple(c for c in contents.of(Modality.SUBTITLES) if isinstance(c, SubtitleCue))
        ocr: list[str] = []
        for result in contents.of(Modality.OCR):
            if isinstance(result, OcrResult):
                for text in result.texts:
                    if text.text and text.text not in ocr:
                        ocr.append(text.text)

        text_mean = None
        texts = [seg.text for seg in transcript] + [c.text for c in subtitles] + ocr
        if texts and text_vector and self.embed_text is not None:
            text_mean = _normalised(np.asarray(self.embed_text(texts)).mean(axis=0))

        parts = [v for v in (fused.frame_mean, fused.audio_mean, text_mean) if v is not None]
        vector = _normalised(np.concatenate(parts)) if parts else np.zeros(0, np.float32)
        return replace(
            fused,
            contents=contents,
            transcript=transcript,
            subtitles=subtitles,
            ocr=tuple(ocr),
            text_mean=text_mean,
            fused=vector,
        )

    def _scene_change(
        self,
        contents: WindowContents,
        state: _SourceState,
        frames: Sequence[FrameEncoding],
        stack: np.ndarray,
    ) -> tuple[float, float | None]:
        """Largest cosine distance between consecutive frames, counted once per change.

        Windows overlap when hop < window, so only pairs whose later frame falls in this
        window's own hop, [start, start + hop), count here; the earlier frame may come from
        the previous window.
        """
        hop = self.settings.hop_s or (contents.end - contents.start)
        timeline = dict(state.recent)
        timeline.update(zip((f.time for f in frames), stack, strict=True))
        state.recent = [(f.time, v) for f, v in zip(frames, stack, strict=True)]
        ordered = sorted(timeline.items(), key=lambda kv: kv[0])
        best, at = 0.0, None
        for (_, a), (t, b) in itertools.pairwise(ordered):
            if contents.start <= t < contents.start + hop:
                distance = max(0.0, 1.0 - float(a @ b))
                if distance > best:
                    best, at = distance, t
        return best, at
