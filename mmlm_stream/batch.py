"""Describe one input end to end into its output files (SPEC section 6, per input).

The CLI's ``describe`` runs this for many inputs in parallel; each input either completes
(``<source>.summary.json`` marks it done) or leaves ``<source>.error.json`` with a one-line
reason, and the others go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from mmlm_stream.aggregate import WindowOutput
from mmlm_stream.analysis import SourceAnalysis
from mmlm_stream.config import Config
from mmlm_stream.encoding import Encoders
from mmlm_stream.errors import MmlmError
from mmlm_stream.fusion_head import LoadedHead
from mmlm_stream.operators.detect import QueryScorer
from mmlm_stream.operators.source import SourceSpec
from mmlm_stream.outputs import SourceOutputs, SummaryRecord, write_error
from mmlm_stream.records import EventRecord

logger = logging.getLogger(__name__)


def describe_source(
    spec: SourceSpec,
    out_dir: Path,
    config: Config,
    encoders: Encoders,
    *,
    query_scorer: QueryScorer | None = None,
    head: LoadedHead | None = None,
    on_window: Callable[[WindowOutput], None] | None = None,
    on_events: Callable[[list[EventRecord]], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    stop: threading.Event | None = None,
) -> SummaryRecord:
    """Write the source's files; on a source error write ``error.json`` and re-raise."""
    outputs = SourceOutputs(
        out_dir, spec.source_id, spec.url, config.window.hop_s, config.describer
    )

    def window(output: WindowOutput) -> None:
        outputs.add(output)
        if on_window is not None:
            on_window(output)

    def events(records: list[EventRecord]) -> None:
        outputs.add_events(records)
        if on_events is not None:
            on_events(records)

    try:
        analysis = SourceAnalysis(
            spec,
            config,
            encoders,
            on_window=window,
            on_events=events,
            on_progress=on_progress,
            query_scorer=query_scorer,
            head=head,
            stop=stop,
        )
        result = analysis.run()
    except Exception as exc:  # any failure of this input is recorded; the caller goes on
        outputs.abandon()
        reason = str(exc) if isinstance(exc, MmlmError) else f"{type(exc).__name__}: {exc}"
        write_error(out_dir, spec.source_id, spec.url, reason.splitlines()[0] if reason else "")
        raise
    return outputs.finish(
        duration=result.duration,
        warnings=result.warnings,
        models=result.models,
        late=result.late_dropped,
    )
