"""Messages between the CLI/API and the pipeline for one input of a batch job."""

from __future__ import annotations

from dataclasses import dataclass

from mmlm_stream.config import Config
from mmlm_stream.pipeline.aggregate import WindowOutput
from mmlm_stream.pipeline.analysis import AnalysisResult
from mmlm_stream.records.schema import EventRecord


@dataclass(frozen=True)
class AnalysisRequest:
    """One input to analyse; ``untrusted``: an API caller named it, so it is opened under
    the URL policy of ``config.api`` (``mmlm_stream.security.url_policy``). The config
    travels as the validated model (Ray pickles it), not as a dict validated again on
    arrival."""

    target: str
    source_id: str
    config: Config
    untrusted: bool = False


@dataclass(frozen=True)
class Progress:
    """Where the analysis is, and for live sources how it keeps up."""

    media_time: float
    frames_in: int = 0
    frames_dropped: int = 0
    lag_s: float | None = None


@dataclass(frozen=True)
class WindowDone:
    output: WindowOutput


@dataclass(frozen=True)
class EventsDone:
    events: list[EventRecord]


@dataclass(frozen=True)
class JobDone:
    result: AnalysisResult


@dataclass(frozen=True)
class JobFailed:
    reason: str


JobMessage = Progress | WindowDone | EventsDone | JobDone | JobFailed
