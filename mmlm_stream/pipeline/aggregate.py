"""Per-source aggregation: window the encoder results, fuse, classify, describe, detect.

One ``SourceAggregator`` holds all the state of one source (open windows, label
smoothing, ongoing events, the previous description), which is why the Ray pipeline routes
every item of a source to the same aggregator.

Live sources with speech look at each window twice: once the frames, audio and other fast
channels are complete, the window is fused and the rules that need no text run, so their
events go out within about a hop of the moment; when the transcripts are in too, the text,
the fusion head, the text rules and the description complete the window record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from mmlm_stream.config import Config
from mmlm_stream.models.describer_lm import load_generator
from mmlm_stream.models.fusion_head import LoadedHead
from mmlm_stream.operators.detect import EventEngine, needs_text
from mmlm_stream.operators.fuse import Fuser, FuseSettings
from mmlm_stream.operators.sentences import make_describer
from mmlm_stream.operators.window import Windower
from mmlm_stream.records.evidence import Evidence, FusedWindow, WindowContents
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import Label, SeenObject, TranscriptSegment
from mmlm_stream.records.schema import (
    EventRecord,
    LabelScore,
    ObjectScore,
    Speech,
    SpeechText,
    WindowRecord,
    utc_stamp,
    utterance_id,
)
from mmlm_stream.rules.query_scoring import QueryScorer

TextEmbedder = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class WindowOutput:
    """A closed window's record and the events it started, updated or closed (those not
    already handed out early)."""

    window: WindowRecord
    events: list[EventRecord]
    fused: FusedWindow


@dataclass(frozen=True)
class Polled:
    """What one poll produced: closed windows, and events found early in open live windows."""

    windows: list[WindowOutput]
    events: list[EventRecord]


def transcript_of(contents: WindowContents) -> list[TranscriptSegment]:
    """The utterances (transcript segments, whole) in a window, in time order."""
    found = [s for s in contents.of(Modality.SPEECH) if isinstance(s, TranscriptSegment)]
    return sorted(found, key=lambda s: (s.start, s.end))


def owner(t: float, hop_s: float) -> int:
    """The window whose hop holds media time ``t``: window k owns [k * hop, (k + 1) * hop)."""
    return math.floor(t / hop_s + 1e-9)


def hop_text(utterances: Sequence[TranscriptSegment], start: float, hop_s: float) -> str:
    """The words of ``utterances`` that start in the hop of the window at ``start``; an
    utterance without word times is one word at its start."""
    k = owner(start, hop_s)
    words: list[str] = []
    for u in utterances:
        timed = [(w.start, w.text) for w in u.words] or [(u.start, u.text)]
        words += [text.strip() for t, text in timed if owner(t, hop_s) == k and text.strip()]
    return " ".join(words)


def _scores(labels: Sequence[Label]) -> list[LabelScore]:
    return [LabelScore(label=x.label, score=min(1.0, max(0.0, x.score))) for x in labels]


def _objects(seen: Sequence[SeenObject]) -> list[ObjectScore]:
    return [
        ObjectScore(label=o.label, score=min(1.0, max(0.0, o.score)), box=list(o.box)) for o in seen
    ]


class SourceAggregator:
    def __init__(
        self,
        source: str,
        config: Config,
        channels: frozenset[Modality],
        *,
        embed_text: TextEmbedder | None = None,
        query_scorer: QueryScorer | None = None,
        head: LoadedHead | None = None,
        model_ids: dict[str, str] | None = None,
        live: bool = False,
        wall_of: Callable[[float], datetime | None] | None = None,
    ) -> None:
        self.source = source
        self.config = config
        win = config.window
        deferred = channels & {Modality.SPEECH} if live else frozenset()
        self.windower = Windower(
            source,
            channels,
            win.window_s,
            win.hop_s,
            max_lateness_s=win.max_lateness_s if live else None,
            wall_of=wall_of,
            deferred=deferred,
            max_gap_s=config.decode.max_gap_s,
        )
        self.fuser = Fuser(
            FuseSettings(top_k=win.top_k, smoothing=win.smoothing, hop_s=win.hop_s), embed_text
        )
        self.head = head
        self.describer = make_describer(config.describer, load=load_generator)
        self.events = EventEngine(
            config.events, query_scorer, select=(lambda r: not needs_text(r)) if deferred else None
        )
        self.text_events = (
            EventEngine(config.events, query_scorer, select=needs_text) if deferred else None
        )
        self._early: dict[str, tuple[FusedWindow, list[EventRecord]]] = {}
        self.model_ids = model_ids or {}
        self.windows_closed = 0

    def add(self, channel: Modality, items: Sequence[Evidence]) -> None:
        for item in items:
            self.windower.add(channel, item)

    def advance(self, channel: Modality, media_time: float) -> None:
        self.windower.advance(channel, media_time)

    def poll(self) -> Polled:
        """Windows that closed (watermarks or, for live sources, lateness), and events of
        live windows whose fast channels are complete."""
        early: list[EventRecord] = []
        for contents in self.windower.ready_early():
            early += self._look_early(contents)
        return Polled([self._emit(contents) for contents in self.windower.ready()], early)

    def finish(self) -> tuple[list[WindowOutput], list[EventRecord]]:
        """End of stream: remaining windows, then closing updates of ongoing events."""
        outputs = [self._emit(contents) for contents in self.windower.finish()]
        closing = self.events.close(self.source)
        if self.text_events is not None:
            closing += self.text_events.close(self.source)
        return outputs, closing

    def _look_early(self, contents: WindowContents) -> list[EventRecord]:
        fused = self.fuser.fuse(contents, text_vector=False)
        events = self.events.process(fused)
        self._early[contents.window_id] = (fused, events)
        return events

    @property
    def late_dropped(self) -> int:
        return sum(self.windower.late_dropped.values())

    def close(self) -> None:
        """Nothing to release in process (the Aggregation protocol's hook for actors)."""

    def _speech(self, contents: WindowContents, fused: FusedWindow) -> Speech:
        """The window's speech: its words, the utterances it overlaps, its hop's words (the
        partition rule is in ``records.Speech``)."""
        utterances = transcript_of(contents)
        return Speech(
            text=fused.speech_text,
            segments=[
                SpeechText(
                    start=round(u.start, 3),
                    end=round(u.end, 3),
                    text=u.text.strip(),
                    utterance_id=utterance_id(contents.source, u.start),
                )
                for u in utterances
            ],
            new_text=hop_text(utterances, contents.start, self.config.window.hop_s),
        )

    def _emit(self, contents: WindowContents) -> WindowOutput:
        early_ids: list[str] = []
        looked = contents.window_id in self._early  # its fast events are already out
        if looked:
            fused, handed_out = self._early.pop(contents.window_id)
            early_ids = [e.id for e in handed_out]
            fused = self.fuser.with_text(fused, contents)
        else:  # not live, or closed before an early look (end of stream): all events here
            fused = self.fuser.fuse(contents)
        if self.head is not None:
            fcfg = self.config.fusion
            predicted = [x for x in self.head.predict(fused) if x.score >= fcfg.min_score]
            fused = replace(fused, extra_labels=tuple(predicted[: fcfg.top_k]))
        if self.text_events is None:
            events = self.events.process(fused)
        elif looked:
            events = self.text_events.process(fused)
        else:
            events = self.events.process(fused) + self.text_events.process(fused)
        description = self.describer.describe(fused)
        self.windows_closed += 1
        record = WindowRecord(
            source=contents.source,
            window_id=contents.window_id,
            start=contents.start,
            end=contents.end,
            wall_start=utc_stamp(contents.wall_start) if contents.wall_start else None,
            visual=_scores(fused.visual),
            audio=_scores(fused.audio),
            speech=self._speech(contents, fused),
            subtitles=[
                SpeechText(start=round(c.start, 3), end=round(c.end, 3), text=c.text)
                for c in fused.subtitles
            ],
            ocr=list(fused.ocr),
            objects=_objects(fused.objects),
            fusion=_scores(fused.extra_labels),
            description=description,
            events=early_ids + [event.id for event in events],
            channels=sorted(channel.value for channel in contents.present),
            models=self.model_ids,
        )
        return WindowOutput(record, events, fused)
