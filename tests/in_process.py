"""One input end to end into its output files in this process: no Ray, no Serve.

The tests' way to run the whole analysis on real (or tiny) models: the same SourceAnalysis,
encoders and output writer as the service, where the service runs them in its Decoder
replica and streams the windows to the driver.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from mmlm_stream.config import Config
from mmlm_stream.models.fusion_head import LoadedHead
from mmlm_stream.operators.source import SourceSpec
from mmlm_stream.pipeline.aggregate import WindowOutput
from mmlm_stream.pipeline.analysis import SourceAnalysis
from mmlm_stream.pipeline.encoding import Encoders
from mmlm_stream.pipeline.outputs import SourceOutputs, SummaryRecord, write_error
from mmlm_stream.records.schema import EventRecord
from mmlm_stream.rules.query_scoring import QueryScorer
from mmlm_stream.util.errors import MmlmError

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
