"""Per-source output files of a batch run (SPEC section 6).

``<source>.windows.jsonl`` and ``<source>.events.jsonl`` (one record per line),
``<source>.srt`` / ``<source>.vtt`` (the descriptions as a subtitle track),
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

from mmlm_stream.aggregate import WindowOutput
from mmlm_stream.evidence import Channel
from mmlm_stream.models.roles import TranscriptSegment
from mmlm_stream.records import EventRecord, LabelScore, WindowRecord, utc_stamp
from mmlm_stream.redaction import redact_text, redact_url

logger = logging.getLogger(__name__)

SUMMARY_SCHEMA = "mmlm.summary/1"


class LabelSummary(BaseModel):
    label: str
    max_score: float
    windows: int


# Files outlive the run and travel: an input's credentials never reach them.
ShownUrl = Annotated[str, AfterValidator(redact_url)]
ShownText = Annotated[str, AfterValidator(redact_text)]


class SummaryRecord(BaseModel):
    schema_: Literal["mmlm.summary/1"] = Field(SUMMARY_SCHEMA, alias="schema")
    source: str
    input: ShownUrl
    duration: float
    windows: int
    events: dict[str, int]
    top_labels: dict[str, list[LabelSummary]]
    transcript: str
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

    def __init__(self, out_dir: Path, source: str, target: str, hop_s: float) -> None:
        self.out_dir = out_dir
        self.source = source
        self.target = target
        self.hop_s = hop_s
        self.paths = paths(out_dir, source)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths["error.json"].unlink(missing_ok=True)
        self.paths["summary.json"].unlink(missing_ok=True)
        self._windows = self._partial("windows.jsonl").open("w", encoding="utf-8")
        self._event_log = self._partial("events.jsonl").open("w", encoding="utf-8")
        self._events: dict[str, EventRecord] = {}
        self._cues: list[tuple[float, float, str]] = []
        self._segments: dict[tuple[float, str], TranscriptSegment] = {}
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
        if record.description:
            self._cues.append((record.start, record.end, record.description))
        for modality, labels in (
            ("visual", record.visual),
            ("audio", record.audio),
            ("objects", record.objects),
        ):
            self._count(modality, labels)
        for segment in output.fused.contents.of(Channel.SPEECH):
            if isinstance(segment, TranscriptSegment):
                self._segments[(round(segment.start, 3), segment.text)] = segment
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
        transcript = " ".join(
            seg.text.strip() for _, seg in sorted(self._segments.items()) if seg.text.strip()
        )
        summary = SummaryRecord(
            source=self.source,
            input=self.target,
            duration=round(total, 3),
            windows=self._windows_written,
            events=dict(Counter(e.type for e in events)),
            top_labels=_top_labels(self._tally),
            transcript=transcript,
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

    def _write_subtitles(self, duration: float) -> None:
        """Each window's description shows for its own hop, so cues never overlap."""
        subs = pysubs2.SSAFile()
        for index, (start, end, text) in enumerate(self._cues):
            stop = end if index == len(self._cues) - 1 else min(end, start + self.hop_s)
            stop = min(stop, max(duration, start + 0.5))
            subs.events.append(
                pysubs2.SSAEvent(start=round(start * 1000), end=round(stop * 1000), text=text)
            )
        for kind, fmt in (("srt", "srt"), ("vtt", "vtt")):
            tmp = self.paths[kind].with_name(self.paths[kind].name + ".partial")
            subs.save(str(tmp), format_=fmt, encoding="utf-8")
            os.replace(tmp, self.paths[kind])


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
) -> tuple[Any, str | None]:
    """Write one input's streamed job messages (``mmlm_stream.jobs``) into its files.

    Returns (the analysis result, None) when the input completed, or (None, one-line reason)
    after writing ``<source>.error.json``. ``on_message`` sees every message (progress bars,
    counters).
    """
    from mmlm_stream.jobs import EventsDone, JobDone, JobFailed, WindowDone

    outputs = SourceOutputs(out_dir, source, target, hop_s)
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
