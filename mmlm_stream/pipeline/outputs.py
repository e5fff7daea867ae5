"""Per-source output files of a batch run (contract §6).

``<source>.windows.jsonl`` and ``<source>.events.jsonl`` (one record per line),
``<source>.srt`` / ``<source>.vtt`` (the description track: each window's description in
short, readable form, shown for the window's centre hop; ``operators/captions``),
``<source>.summary.json``; a failed input gets ``<source>.error.json`` instead. Lines are
appended as windows close, into ``.partial`` files, so a crash loses nothing already
produced; the summary is written last and marks the input as done (resumability).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import pysubs2
from pydantic import AfterValidator, BaseModel, Field

from mmlm_stream.config.describer import DescriberConfig
from mmlm_stream.operators.captions import MIN_CUE_S, Captioner, centre_hop, fit_text
from mmlm_stream.operators.subtitles import DESCRIPTION_TRACK_MARK
from mmlm_stream.pipeline.aggregate import WindowOutput
from mmlm_stream.records.schema import (
    EventRecord,
    LabelScore,
    WindowRecord,
    utc_stamp,
    utterance_id,
)
from mmlm_stream.util.redaction import redact_text, redact_url

logger = logging.getLogger(__name__)

SUMMARY_SCHEMA = "mmlm.summary/1"


class LabelSummary(BaseModel):
    label: str
    max_score: float
    windows: int


# Files outlive the run and travel: an input's credentials never reach them.
ShownUrl = Annotated[str, AfterValidator(redact_url)]
ShownText = Annotated[str, AfterValidator(redact_text)]


class Utterance(BaseModel):
    """One utterance of the transcript, as windows reference it (``speech.segments``)."""

    id: str = Field(description="``{source}:speech:{start_ms}``, the windows' utterance_id.")
    start: float
    end: float
    text: str


class SummaryRecord(BaseModel):
    schema_: Literal["mmlm.summary/1"] = Field(SUMMARY_SCHEMA, alias="schema")
    source: str
    input: ShownUrl
    duration: float
    windows: int
    events: dict[str, int]
    top_labels: dict[str, list[LabelSummary]]
    transcript: str = Field(description="The utterances' texts joined, in time order.")
    utterances: list[Utterance] = Field(
        default_factory=list,
        description="The transcript, each utterance once in time order; joining the windows' "
        "speech.new_text gives the same words.",
    )
    subtitle_cues: int
    warnings: list[ShownText] = Field(default_factory=list)
    models: dict[str, str] = Field(default_factory=dict)
    late_dropped: int = 0
    nodes: dict[str, str] = Field(
        default_factory=dict, description="Ray node of each deployment that did the work."
    )
    created_at: str


class ErrorRecord(BaseModel):
    schema_: Literal["mmlm.error/1"] = Field("mmlm.error/1", alias="schema")
    source: str
    input: ShownUrl
    reason: ShownText
    created_at: str


def paths(out_dir: Path, source: str) -> dict[str, Path]:
    return {
        kind: out_dir / f"{source}.{kind}"
        for kind in ("windows.jsonl", "events.jsonl", "srt", "vtt", "summary.json", "error.json")
    }


def is_done(out_dir: Path, source: str) -> bool:
    return paths(out_dir, source)["summary.json"].exists()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_error(out_dir: Path, source: str, target: str, reason: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = paths(out_dir, source)["error.json"]
    record = ErrorRecord(source=source, input=target, reason=reason, created_at=utc_stamp())
    _atomic_write(path, record.model_dump_json(by_alias=True, indent=2) + "\n")
    return path


def _top_labels(
    tally: dict[str, dict[str, tuple[float, int]]], k: int = 10
) -> dict[str, list[LabelSummary]]:
    result = {}
    for modality, labels in tally.items():
        ranked = sorted(labels.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))
        result[modality] = [
            LabelSummary(label=name, max_score=round(best, 4), windows=count)
            for name, (best, count) in ranked[:k]
        ]
    return result


class SourceOutputs:
    """Writes one source's files as windows close; ``finish`` completes them atomically."""

    def __init__(
        self,
        out_dir: Path,
        source: str,
        target: str,
        hop_s: float,
        describer: DescriberConfig | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.source = source
        self.target = target
        self.hop_s = hop_s
        self._captioner = Captioner(describer)
        self.paths = paths(out_dir, source)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths["error.json"].unlink(missing_ok=True)
        self.paths["summary.json"].unlink(missing_ok=True)
        self._windows = self._partial("windows.jsonl").open("w", encoding="utf-8")
        self._event_log = self._partial("events.jsonl").open("w", encoding="utf-8")
        self._events: dict[str, EventRecord] = {}
        self._cues: list[list[Any]] = []  # [start, end, text] of each description-track cue
        self._utterances: dict[str, Utterance] = {}
        self._subtitles: set[tuple[float, str]] = set()
        self._tally: dict[str, dict[str, tuple[float, int]]] = {}
        self._windows_written = 0
        self._end = 0.0

    def _partial(self, kind: str) -> Path:
        final = self.paths[kind]
        return final.with_name(final.name + ".partial")

    def add(self, output: WindowOutput) -> None:
        record = output.window
        self._windows.write(record.to_json() + "\n")
        self._windows.flush()
        self._windows_written += 1
        self._end = max(self._end, record.end)
        self._caption(output)
        for modality, labels in (
            ("visual", record.visual),
            ("audio", record.audio),
            ("objects", record.objects),
        ):
            self._count(modality, labels)
        for segment in record.speech.segments:
            uid = segment.utterance_id or utterance_id(self.source, segment.start)
            self._utterances[uid] = Utterance(
                id=uid, start=segment.start, end=segment.end, text=segment.text
            )
        for cue in record.subtitles:
            self._subtitles.add((cue.start, cue.text))
        self.add_events(output.events)

    def add_events(self, events: list[EventRecord]) -> None:
        for event in events:
            self._event_log.write(event.to_json() + "\n")
            self._events[event.id] = event
        self._event_log.flush()

    def _count(self, modality: str, labels: list[LabelScore]) -> None:
        table = self._tally.setdefault(modality, {})
        for label in labels:
            best, count = table.get(label.label, (0.0, 0))
            table[label.label] = (max(best, label.score), count + 1)

    def finish(
        self,
        *,
        duration: float | None,
        warnings: list[str],
        models: dict[str, str],
        late: int,
        nodes: dict[str, str] | None = None,
    ) -> SummaryRecord:
        self._windows.close()
        self._event_log.close()
        os.replace(self._partial("windows.jsonl"), self.paths["windows.jsonl"])
        events = sorted(self._events.values(), key=lambda e: (e.start, e.id))
        _atomic_write(self.paths["events.jsonl"], "".join(e.to_json() + "\n" for e in events))
        self._partial("events.jsonl").unlink(missing_ok=True)
        total = duration if duration is not None else self._end
        self._write_subtitles(total)
        utterances = sorted(self._utterances.values(), key=lambda u: (u.start, u.end, u.id))
        transcript = " ".join(u.text.strip() for u in utterances if u.text.strip())
        summary = SummaryRecord(
            source=self.source,
            input=self.target,
            duration=round(total, 3),
            windows=self._windows_written,
            events=dict(Counter(e.type for e in events)),
            top_labels=_top_labels(self._tally),
            transcript=transcript,
            utterances=utterances,
            subtitle_cues=len(self._subtitles),
            warnings=warnings,
            models=models,
            late_dropped=late,
            nodes=nodes or {},
            created_at=utc_stamp(),
        )
        _atomic_write(
            self.paths["summary.json"], summary.model_dump_json(by_alias=True, indent=2) + "\n"
        )
        return summary

    def abandon(self) -> None:
        """Close the files, keeping the partial lines for inspection."""
        self._windows.close()
        self._event_log.close()

    def _caption(self, output: WindowOutput) -> None:
        """The window's cue (``operators/captions``): shown for its centre hop, or the
        previous cue held one hop longer when nothing changed."""
        record = output.window
        start, end = centre_hop(record.start, record.end, self.hop_s)
        caption = self._captioner.caption(output.fused, end - start)
        if caption.text:
            self._cues.append([start, end, caption.text])
        elif caption.holds and self._cues and abs(self._cues[-1][1] - start) < 1e-6:
            self._cues[-1][1] = end

    def _write_subtitles(self, duration: float) -> None:
        """The description track: cues in time order, never overlapping, none past the end
        of the media (a cue it shortens is cut to stay readable). The WebVTT header names
        the track as ours, so it is never read back as an input's subtitles."""
        subs = pysubs2.SSAFile()
        for start, end, text in self._cues:
            stop = min(end, duration) if duration > start else end
            shown = fit_text(text, stop - start) if stop - start >= MIN_CUE_S else ""
            if shown:
                subs.events.append(
                    pysubs2.SSAEvent(start=round(start * 1000), end=round(stop * 1000), text=shown)
                )
        texts = {
            "srt": subs.to_string("srt"),
            "vtt": subs.to_string("vtt").replace("WEBVTT", f"WEBVTT - {DESCRIPTION_TRACK_MARK}", 1),
        }
        for kind, text in texts.items():
            _atomic_write(self.paths[kind], text)


def read_windows(path: Path) -> list[WindowRecord]:
    return [
        WindowRecord.model_validate(json.loads(line))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


async def write_job(
    messages: AsyncIterator[Any],
    out_dir: Path,
    source: str,
    target: str,
    hop_s: float,
    on_message: Callable[[Any], None] | None = None,
    *,
    describer: DescriberConfig | None = None,
) -> tuple[Any, str | None]:
    """Write one input's streamed job messages (``mmlm_stream.pipeline.jobs``) into its files.

    Returns (the analysis result, None) when the input completed, or (None, one-line reason)
    after writing ``<source>.error.json``. ``on_message`` sees every message (progress bars,
    counters); ``describer`` sets the thresholds of the description track's cues.
    """
    from mmlm_stream.pipeline.jobs import EventsDone, JobDone, JobFailed, WindowDone

    outputs = SourceOutputs(out_dir, source, target, hop_s, describer)
    result, error = None, None
    try:
        async for message in messages:
            if on_message is not None:
                on_message(message)
            if isinstance(message, WindowDone):
                outputs.add(message.output)
            elif isinstance(message, EventsDone):
                outputs.add_events(message.events)
            elif isinstance(message, JobDone):
                result = message.result
            elif isinstance(message, JobFailed):
                error = message.reason
    except Exception as exc:  # the pipeline call broke: this input fails, the caller goes on
        error = f"{target}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if error is not None or result is None:
        outputs.abandon()
        reason = error or f"{target}: the pipeline ended without a result"
        write_error(out_dir, source, target, reason)
        return None, reason
    outputs.finish(
        duration=result.duration,
        warnings=result.warnings,
        models=result.models,
        late=result.late_dropped,
        nodes=result.nodes,
    )
    return result, None
