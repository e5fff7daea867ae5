"""The pipeline behind the HTTP API: live streams, batch jobs, search, metrics.

Runs inside the ingress replica. A stream or a job input is one streaming call to the
Decoder deployment (``run``); this module keeps what the API reports about them, keeps the
stream registry in Redis (``{prefix}:streams``) so a restarted service resumes every
registered stream, and ranks windows for ``/search``.

Live streams are supervised: the registry is the desired state, and each registered stream
has one supervising task that owns its one analysis at a time. When the analysis ends for
any reason but a removal (its Decoder replica, aggregator actor or an encoder call died, a
replica was scaled down), the stream goes ``reconnecting`` (a ``stream`` event and the
registry state say why), the events it left open are closed with that reason, and the
analysis starts again after a backoff on whatever replica Serve routes to. A stream whose
source is permanently invalid is ``failed`` and tried again every
``supervisor.failed_retry_s``. A reconcile loop starts registered streams that do not run
(another ingress registered them, or a restart) and registers again running streams that
Redis lost (a restart without persistence).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.bus.redis_bus import BusKeys
from mmlm_stream.bus.redis_client import async_client_for
from mmlm_stream.bus.transport import Publisher, StreamRegistry
from mmlm_stream.config import Config
from mmlm_stream.operators.source import assign_source_ids, resolve_source
from mmlm_stream.pipeline.jobs import (
    AnalysisRequest,
    EventsDone,
    JobFailed,
    JobMessage,
    Progress,
    WindowDone,
)
from mmlm_stream.pipeline.outputs import is_done, write_job
from mmlm_stream.records.channels import StreamState, StreamStatus
from mmlm_stream.records.schema import EventRecord, UnreadableRecord, WindowRecord, utc_stamp
from mmlm_stream.records.stream_events import registry_state, status_event
from mmlm_stream.security.sealed import Sealer, Unsealable
from mmlm_stream.service.metrics import PipelineMetrics
from mmlm_stream.service.protocol import (
    Conflict,
    JobInfo,
    JobInput,
    JobRequest,
    NotFound,
    SearchHit,
    StreamInfo,
    StreamSpec,
    StreamStats,
    TooMany,
    stream_events,
)
from mmlm_stream.util.backoff import Backoff
from mmlm_stream.util.errors import MmlmError
from mmlm_stream.util.redaction import redact_url

logger = logging.getLogger(__name__)

Run = Callable[[AnalysisRequest], AsyncIterator[JobMessage]]
Embed = Callable[[list[str]], Awaitable[np.ndarray]]
SEARCH_WINDOWS_PER_SOURCE = 2000
# Registry states of a stream whose analysis was running (a resume finds it interrupted).
RUNNING_STATES = frozenset({"connecting", "streaming", "degraded", "reconnecting"})


def window_text(window: WindowRecord) -> str:
    """What a window is about, as one text to embed for search."""
    parts = [window.description, window.speech.text]
    parts += [cue.text for cue in window.subtitles] + window.ocr
    parts += [label.label for label in window.visual + window.objects + window.audio]
    return " ".join(part for part in parts if part)


class _Stream:
    """One supervised live stream: what the API shows, and what its analysis left open."""

    def __init__(self, spec: StreamSpec, stream_id: str) -> None:
        self.spec = spec
        self.id = stream_id
        self.info = StreamInfo(
            id=stream_id,
            url=redact_url(spec.url),
            state="connecting",
            since=utc_stamp(),
            name=spec.name,
            labels=spec.labels,
        )
        self.task: asyncio.Task[None] | None = None
        self.removing = False
        self.open_events: dict[str, EventRecord] = {}
        self.media_time = 0.0
        self._frames: list[tuple[float, int]] = []

    def track(self, events: list[EventRecord]) -> None:
        """Remember which events are open, to close them if the analysis dies."""
        for event in events:
            if event.ongoing:
                self.open_events[event.id] = event
            else:
                self.open_events.pop(event.id, None)

    def progress(self, message: Progress) -> StreamStats:
        now = time.monotonic()
        self._frames = [(t, n) for t, n in self._frames if now - t < 10] + [
            (now, message.frames_in)
        ]
        first_t, first_n = self._frames[0]
        fps = (message.frames_in - first_n) / (now - first_t) if now > first_t else None
        self.info.stats = StreamStats(
            input_fps=round(fps, 2) if fps is not None else None,
            frames_dropped=message.frames_dropped,
            lag_s=round(message.lag_s, 3) if message.lag_s is not None else None,
            windows=self.info.stats.windows,
        )
        return self.info.stats


class PipelineBackend:
    """ServiceBackend over the Serve application (see mmlm_stream.service.protocol)."""

    def __init__(
        self,
        config: Config,
        run: Run,
        embed: Embed,
        bus: Publisher,
        registry: StreamRegistry,
        redis_url: str | None,
        jobs_dir: Path,
        encoder_stats: Callable[[], Awaitable[dict[str, dict[str, Any]]]] | None = None,
        publisher_metrics: Callable[[], Awaitable[dict[str, int]]] | None = None,
        publisher_healthy: Callable[[], Awaitable[bool]] | None = None,
        sink_stats: Callable[[], Awaitable[dict[str, dict[str, Any]]]] | None = None,
    ) -> None:
        self.config = config
        self.sink_stats = sink_stats
        self.run = run
        self.embed = embed
        self.bus = bus
        self.registry = registry
        self.redis_url = redis_url
        self.jobs_dir = jobs_dir
        self.encoder_stats = encoder_stats
        self.publisher_metrics = publisher_metrics
        self.publisher_healthy = publisher_healthy
        self.metrics = PipelineMetrics()
        token = config.api.token()
        self.sealer = Sealer.from_secret(token) if token else Sealer.from_folder(jobs_dir)
        self.streams: dict[str, _Stream] = {}
        self.jobs: dict[str, JobInfo] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._embeddings: dict[str, np.ndarray] = {}
        self._reconciler: asyncio.Task[None] | None = None

    async def resume(self) -> int:
        """Start every stream registered in Redis (after a restart of the service), then
        keep comparing the registry with what runs (module docstring)."""
        registered = await self._reconcile()
        if self._reconciler is None:
            self._reconciler = self._spawn(self._reconcile_forever())
        return registered

    async def _reconcile(self) -> int:
        try:
            registered = await asyncio.to_thread(self.registry.streams)
        except MmlmError as exc:
            logger.warning("registry not readable (%s); streams keep running", exc)
            return 0
        for stream_id, info in sorted(registered.items()):
            spec_json = info.get("spec")
            if stream_id in self.streams or not spec_json:
                continue
            if info.get("sealed_url"):
                try:
                    spec_json = {**spec_json, "url": self.sealer.open(info["sealed_url"])}
                except Unsealable as exc:
                    logger.warning("stream %s not resumed: %s", stream_id, exc)
                    continue
            stream = _Stream(StreamSpec.model_validate(spec_json), stream_id)
            state = (info.get("state") or {}).get("state")
            if state in RUNNING_STATES:  # its last supervisor died with the service
                await self._interrupted(stream)
            self._start(stream)
            logger.info("resumed stream %s", stream_id)
        for stream_id, stream in list(self.streams.items()):
            if stream.task is None or stream.removing:
                continue  # being added or removed right now: the API call owns the registry
            if "spec" not in registered.get(stream_id, {}):
                logger.warning("stream %s lost from the registry; registering it again", stream_id)
                await self._register(stream)
                if stream.info.state in set(StreamState):
                    # Redis lost its data: the state and its stream event come back too.
                    state = StreamState(stream.info.state)
                    self._transition(stream, state, "registry restored", restore=True)
        return len(registered)

    async def _interrupted(self, stream: _Stream) -> None:
        """A stream whose service died: close what it left open, say it reconnects."""
        reason = "service restarted"
        try:
            stream.open_events = {
                e.id: e for e in await asyncio.to_thread(self.registry.open_events, stream.id)
            }
        except MmlmError as exc:
            logger.warning("stream %s: open events not readable (%s)", stream.id, exc)
        stream.media_time = max((e.end for e in stream.open_events.values()), default=0.0)
        await self._close_open_events(stream, reason)
        self._transition(stream, StreamState.RECONNECTING, reason)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.supervisor.reconcile_s)
            try:
                await self._reconcile()
            except Exception:  # the loop must outlive any one failure
                logger.exception("reconcile failed; trying again")

    async def _register(self, stream: _Stream) -> None:
        """The spec in the registry shows a redacted URL; the full one is sealed."""
        url = stream.spec.url
        entry: dict[str, Any] = {"spec": stream.spec.model_dump(mode="json")}
        if redact_url(url) != url:
            entry["spec"]["url"] = redact_url(url)
            entry["sealed_url"] = self.sealer.seal(url)
        await asyncio.to_thread(self.registry.register_stream, stream.id, entry)

    # -- streams ---------------------------------------------------------------------------

    async def add_stream(self, spec: StreamSpec) -> StreamInfo:
        stream_events(self.config.events, spec)  # Invalid: nothing registered
        stream_id = spec.id or resolve_source(spec.url).source_id
        if stream_id in self.streams:
            raise Conflict(f"stream '{stream_id}' already exists")
        if len(self.streams) >= self.config.api.max_streams:
            raise TooMany(
                f"the service runs {len(self.streams)} streams, its limit (api.max_streams)"
            )
        stream = _Stream(spec, stream_id)
        self.streams[stream_id] = stream  # taken before the first await: one POST wins
        try:
            await self._register(stream)
        except BaseException:
            del self.streams[stream_id]
            raise
        self._start(stream)
        return stream.info

    def list_streams(self) -> list[StreamInfo]:
        return [self.streams[key].info for key in sorted(self.streams)]

    def get_stream(self, stream_id: str) -> StreamInfo:
        return self._stream(stream_id).info

    async def remove_stream(self, stream_id: str) -> None:
        stream = self._stream(stream_id)
        if stream.removing:
            raise NotFound(f"stream '{stream_id}' is being removed")
        stream.removing = True
        if stream.task is not None:
            stream.task.cancel()
        try:
            await asyncio.to_thread(self.registry.unregister_stream, stream_id)
        finally:
            del self.streams[stream_id]  # only now: the reconciler must not start it again
        self.metrics.remove_stream(stream_id)

    def _stream(self, stream_id: str) -> _Stream:
        try:
            return self.streams[stream_id]
        except KeyError:
            raise NotFound(f"no stream '{stream_id}'") from None

    def _stream_config(self, spec: StreamSpec) -> Config:
        """The service's config with the stream's decode options, rules and zones."""
        update: dict[str, Any] = {"live": True}
        if spec.loop:
            update |= {"loop": True, "realtime": True}
        if spec.frame_fps is not None:
            update["frame_fps"] = spec.frame_fps
        config = self._with_decode(update)
        if spec.rules is None and spec.zones is None:
            return config
        return config.model_copy(update={"events": stream_events(config.events, spec)})

    def _start(self, stream: _Stream) -> None:
        self.streams[stream.id] = stream
        stream.task = self._spawn(self._supervise(stream))

    async def _supervise(self, stream: _Stream) -> None:
        """Run the stream's analysis again and again until it is removed (module docstring)."""
        sup = self.config.supervisor
        backoff = Backoff(initial=sup.restart_initial_s, maximum=sup.restart_max_s)
        request = AnalysisRequest(
            stream.spec.url, stream.id, self._stream_config(stream.spec), untrusted=True
        )
        while True:
            started = time.monotonic()
            reason = await self._watch(stream, request)
            if time.monotonic() - started >= sup.stable_s:
                backoff.reset()
            if stream.info.state == "failed" and reason is None:
                reason = stream.info.reason or "source invalid"
                await self._close_open_events(stream, reason)
                delay = sup.failed_retry_s
            else:
                reason = reason or "analysis ended"
                await self._close_open_events(stream, reason)
                self._transition(stream, StreamState.RECONNECTING, reason, backoff.attempt + 1)
                self.metrics.stream_restarted(stream.id)
                delay = backoff.next_delay()
            logger.warning("stream %s: %s; restarting in %.1fs", stream.id, reason, delay)
            await asyncio.sleep(delay)

    def _transition(
        self,
        stream: _Stream,
        state: StreamState,
        reason: str,
        attempt: int = 0,
        *,
        restore: bool = False,
    ) -> None:
        """A state the supervisor decides (or, ``restore``, one Redis lost): the API, the
        registry and a ``stream`` event say the same."""
        if restore:
            reason = stream.info.reason or reason
        status = StreamStatus(stream.id, state, stream.media_time, reason=reason, attempt=attempt)
        event = status_event(status)
        self.bus.publish_event(event)
        self.bus.set_stream_state(stream.id, registry_state(event))
        info = stream.info
        info.state, info.since, info.reason = state.value, event.wall_start, reason
        self.metrics.set_state(stream.id, state.value)

    async def _close_open_events(self, stream: _Stream, reason: str) -> None:
        """Close what the dead analysis left open: ``ongoing: false``, with the reason."""
        for event in stream.open_events.values():
            closed = event.model_copy(
                update={
                    "ongoing": False,
                    "end": max(event.end, stream.media_time),
                    "evidence": {**event.evidence, "closed": {"reason": reason}},
                }
            )
            self.bus.publish_event(closed)
        stream.open_events.clear()

    async def _watch(self, stream: _Stream, request: AnalysisRequest) -> str | None:
        """One analysis of the stream; returns why it failed, or None when it ended."""
        info = stream.info
        try:
            async for message in self.run(request):
                if isinstance(message, Progress):
                    stats = stream.progress(message)
                    stream.media_time = max(stream.media_time, message.media_time)
                    self.metrics.set_stream(
                        stream.id,
                        input_fps=stats.input_fps,
                        lag_s=stats.lag_s,
                        frames_dropped_total=stats.frames_dropped,
                    )
                elif isinstance(message, WindowDone):
                    window = message.output.window
                    info.stats.windows += 1
                    info.last_description = window.description
                    stream.media_time = max(stream.media_time, window.end)
                    stream.track(message.output.events)
                    self.metrics.observe_window(window)
                elif isinstance(message, EventsDone):
                    stream.track(message.events)
                    for event in message.events:
                        if event.type == "stream":
                            info.state, info.since = event.key, event.wall_start
                            info.reason = event.evidence.get("stream", {}).get("reason")
                            self.metrics.set_state(stream.id, event.key)
                elif isinstance(message, JobFailed):
                    return message.reason
        except asyncio.CancelledError:
            info.state, info.since = "stopped", utc_stamp()
            raise
        except Exception as exc:  # the pipeline call itself broke (a replica died)
            detail = str(exc).splitlines()[0] if str(exc) else "no detail"
            return f"{type(exc).__name__}: {detail}"
        return None

    # -- jobs ------------------------------------------------------------------------------

    def submit_job(self, request: JobRequest) -> JobInfo:
        active = sum(job.state in ("queued", "running") for job in self.jobs.values())
        if active >= self.config.api.max_jobs:
            raise TooMany(f"{active} jobs are queued or running, the limit (api.max_jobs)")
        job_id = uuid.uuid4().hex[:12]
        ids = assign_source_ids(request.inputs)
        job = JobInfo(
            id=job_id,
            state="queued",
            created_at=utc_stamp(),
            inputs=[
                JobInput(input=target, source=sid)
                for target, sid in zip(request.inputs, ids, strict=True)
            ],
        )
        self.jobs[job_id] = job
        self._spawn(self._job(job, request.force))
        return job

    def get_job(self, job_id: str) -> JobInfo:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise NotFound(f"no job '{job_id}'") from None

    async def _job(self, job: JobInfo, force: bool) -> None:
        job.state = "running"
        out = self.jobs_dir / job.id
        for item in job.inputs:
            assert item.source is not None
            if not force and is_done(out, item.source):
                item.state = "skipped"
                continue
            item.state = "running"
            item.error = await self._describe_input(item, out)
            item.state = "failed" if item.error else "done"
        failed = sum(item.state == "failed" for item in job.inputs)
        job.state = "failed" if failed == len(job.inputs) else "partial" if failed else "done"
        job.finished_at = utc_stamp()

    def _job_config(self) -> Config:
        """A job reads each input once, live schemes included (no reconnecting), so the job
        limits (``jobs.*``) bound it and a camera URL submitted as a job ends."""
        return self._with_decode({"live": False, "loop": False})

    def _with_decode(self, update: dict[str, Any]) -> Config:
        """The service's config with ``decode`` keys changed, validated here, where it is
        made, and then passed on as the model."""
        decode = self.config.decode.model_dump() | update
        return Config.model_validate(self.config.model_dump() | {"decode": decode})

    async def _describe_input(self, item: JobInput, out: Path) -> str | None:
        assert item.source is not None
        spec = resolve_source(item.input, item.source)
        request = AnalysisRequest(spec.url, spec.source_id, self._job_config(), untrusted=True)

        def count(message: JobMessage) -> None:
            if isinstance(message, WindowDone):
                item.windows += 1
                item.events += len(message.output.events)

        _, error = await write_job(
            self.run(request),
            out,
            spec.source_id,
            spec.url,
            self.config.window.hop_s,
            count,
            describer=self.config.describer,
        )
        return error

    # -- search and health -----------------------------------------------------------------

    async def search(self, query: str, top_k: int, source: str | None) -> list[SearchHit]:
        windows = await self._recent_windows(source)
        if not windows or not query.strip():
            return []
        missing = [w for w in windows if w.window_id not in self._embeddings]
        if missing:
            vectors = await self.embed([window_text(w) for w in missing])
            for window, vector in zip(missing, np.asarray(vectors), strict=True):
                self._embeddings[window.window_id] = vector
        query_vector = np.asarray(await self.embed([query]))[0]
        scored = sorted(
            ((float(self._embeddings[w.window_id] @ query_vector), w) for w in windows),
            key=lambda pair: -pair[0],
        )
        return [
            SearchHit(
                window_id=w.window_id,
                source=w.source,
                start=w.start,
                end=w.end,
                wall_start=w.wall_start,
                description=w.description,
                score=round(score, 4),
            )
            for score, w in scored[:top_k]
        ]

    async def _recent_windows(self, source: str | None) -> list[WindowRecord]:
        if self.redis_url is None:
            return []
        keys_of = BusKeys(self.config.redis.prefix, self.config.redis.cluster)
        client = async_client_for(
            self.redis_url, self.config.redis, socket_timeout=self.config.redis.socket_timeout_s
        )
        try:
            if source is not None:
                keys = [keys_of.windows(source)]
            else:
                pattern = f"{self.config.redis.prefix}:windows:*"
                keys = [k.decode() async for k in client.scan_iter(pattern)]
            windows = []
            for key in keys:
                for _, fields in await client.xrevrange(key, count=SEARCH_WINDOWS_PER_SOURCE):
                    try:
                        windows.append(WindowRecord.read_json(fields[b"json"]))
                    except (KeyError, UnreadableRecord) as exc:
                        logger.warning("search: skipped an unreadable window of %s: %s", key, exc)
            return windows
        finally:
            await client.aclose()

    async def metrics_text(self) -> str:
        if self.encoder_stats is not None:
            for modality, stats in (await self.encoder_stats()).items():
                for size in stats.get("batches", []):
                    self.metrics.encoder_batch(modality, size)
                self.metrics.set_queue_depth(modality, int(stats.get("waiting", 0)))
        if self.publisher_metrics is not None:
            self.metrics.set_publisher_counts(await self.publisher_metrics())
        if self.sink_stats is not None:
            try:
                self.metrics.set_sink_counts(await self.sink_stats())
            except Exception as exc:  # a Sinks replica being replaced: the rest still answers
                logger.warning("metrics: sink counters unavailable (%s)", exc)
        return self.metrics.exposition()

    async def healthy(self) -> bool:
        """False when records can no longer reach Redis: this replica's bus, or the
        Publisher deployment's, lost its sender thread."""
        if not self.bus.healthy():
            return False
        return await self.publisher_healthy() if self.publisher_healthy is not None else True

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
