"""``mmlm-stream watch URL``: one live stream through the Serve application, printed as it goes.

Windows and events are published to Redis by the application as usual; this command prints
them (readable lines, or JSON) until interrupted, ``--duration`` passes, or the stream ends.
"""

from __future__ import annotations

import asyncio
import time
from typing import TextIO

from mmlm_stream.cli import ray_driver as driver
from mmlm_stream.config import Config
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.pipeline.jobs import AnalysisRequest, EventsDone, JobDone, JobFailed, WindowDone
from mmlm_stream.records.schema import EventRecord, WindowRecord


def _line(record: WindowRecord | EventRecord) -> str:
    if isinstance(record, WindowRecord):
        when = record.wall_start or f"{record.start:.1f}s"
        return f"{when}  {record.source}  window {record.start:.1f}-{record.end:.1f}s  " + (
            record.description
        )
    state = "" if not record.ongoing else " (ongoing)"
    return (
        f"{record.wall_start or f'{record.start:.1f}s'}  {record.source}  {record.type}:"
        f"{record.key}  {record.description}{state}"
    )


def watch(
    url: str,
    config: Config,
    out: TextIO,
    *,
    source_id: str | None = None,
    address: str | None = None,
    redis_url: str | None = None,
    as_json: bool = False,
    duration_s: float | None = None,
) -> int:
    """Returns 0 when stopped or the stream ended, 1 when it failed."""
    spec = resolve_source(url, source_id)
    driver.start_ray(address)
    handle = driver.run_app(config, None, redis_url)
    request = AnalysisRequest(spec.url, spec.source_id, config)

    def emit(record: WindowRecord | EventRecord) -> None:
        out.write((record.to_json() if as_json else _line(record)) + "\n")
        out.flush()

    async def run() -> int:
        stream = handle.options(stream=True).analyse.remote(request)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        code = 0
        async for message in stream:
            if isinstance(message, WindowDone):
                emit(message.output.window)
                for event in message.output.events:
                    emit(event)
            elif isinstance(message, EventsDone):
                for event in message.events:
                    emit(event)
            elif isinstance(message, JobFailed):
                out.write(f"mmlm-stream: {message.reason}\n")
                code = 1
            elif isinstance(message, JobDone):
                break
            if deadline is not None and time.monotonic() >= deadline:
                stream.cancel()
                break
        return code

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    finally:
        handle.flush_publisher.remote().result()
