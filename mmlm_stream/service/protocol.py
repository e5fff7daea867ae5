"""What the HTTP API needs from the running pipeline: the ``ServiceBackend`` protocol and the
typed requests and answers that cross it (contract §7).

The API (``mmlm_stream.service.api``) validates requests and enforces policy (auth, URL allowlist,
limits) before it calls the backend, and turns the backend's errors into HTTP answers:

- ``NotFound`` (a ``LookupError``) -> 404, ``Conflict`` -> 409, ``TooMany`` -> 429,
  ``ConfigError`` -> 400, any other ``MmlmError`` (e.g. ``RedisUnavailable``) -> 502,
  anything else -> 500 (logged).

Every backend method may be synchronous or a coroutine function; both are called on the
ingress's event loop (so a sync method may start asyncio tasks, and state needs no locks).
A sync method must therefore return at once: anything that waits (Ray handles, Redis, files)
belongs in an async method (``await handle.remote()``, ``await asyncio.to_thread(...)``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from mmlm_stream.config.events import EventsConfig, ZoneName
from mmlm_stream.rules.registry import RuleItem
from mmlm_stream.rules.zones import ZonePolygon
from mmlm_stream.util.errors import MmlmError

SOURCE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

JobState = Literal["queued", "running", "done", "partial", "failed"]
JobInputState = Literal["queued", "running", "done", "skipped", "failed"]


class NotFound(MmlmError, LookupError):
    """No stream or job with that id (404)."""


class Conflict(MmlmError):
    """The request clashes with what exists, e.g. a stream id already registered (409)."""


class Invalid(MmlmError, ValueError):
    """A request whose parts do not fit together (e.g. a rule naming a zone that does not
    exist); the message names the problem."""


class TooMany(MmlmError):
    """A limit of streams or jobs is reached (429): say which, so the caller can act."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamSpec(_Model):
    """A live stream to watch (``POST /streams``). The URL policy (schemes, hosts, local files)
    is the API's; the backend may assume it holds."""

    id: str | None = Field(
        None,
        pattern=SOURCE_ID_PATTERN,
        description="Source id of the stream; default: derived from the URL by the backend.",
        examples=["dock-cam"],
    )
    url: str = Field(
        min_length=1,
        description="rtsp://, rtmp://, http(s):// (HLS, MPEG-TS), udp://, tcp://, srt://, ...",
        examples=["rtsp://camera.local:8554/dock"],
    )
    name: str | None = Field(None, max_length=200, description="Display name.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Free-form metadata kept with the stream (e.g. site, floor).",
    )
    frame_fps: float | None = Field(
        None, gt=0, le=30, description="Frames sampled per second; default: decode.frame_fps."
    )
    loop: bool = Field(
        False,
        description="A file source (only with api.allow_local_files) starts again at its end.",
    )
    rules: list[RuleItem] | None = Field(
        None,
        max_length=64,
        description="This stream's event rules, instead of the config's events.rules (the "
        "same fields; docs/configuration.md#event-rules); null = the config's.",
    )
    zones: dict[ZoneName, ZonePolygon] | None = Field(
        None,
        max_length=32,
        description="This stream's zones, instead of the config's events.zones: name -> "
        "[[x, y], ...] as fractions of the frame; null = the config's.",
        examples=[{"driveway": [[0.1, 0.6], [0.6, 0.6], [0.7, 1.0], [0.0, 1.0]]}],
    )


def stream_events(events: EventsConfig, spec: StreamSpec) -> EventsConfig:
    """The event config a stream runs: the config's, with the stream's rules and zones;
    ``Invalid`` with the first problem (an unknown zone, two rules of one name)."""
    if spec.rules is None and spec.zones is None:
        return events
    rules = None if spec.rules is None else [r.model_dump(mode="json") for r in spec.rules]
    zones = None if spec.zones is None else {k: list(v) for k, v in spec.zones.items()}
    try:
        return events.for_stream(rules, zones)
    except ValueError as exc:
        first = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
        name = spec.id or "the stream"
        raise Invalid(f"{name}: {first.removeprefix('Value error, ')}") from None


class StreamStats(_Model):
    input_fps: float | None = Field(None, description="Frames per second arriving lately.")
    frames_dropped: int = Field(0, ge=0, description="Frames dropped by backpressure so far.")
    lag_s: float | None = Field(
        None, description="How far processing is behind the stream's wall clock."
    )
    windows: int = Field(0, ge=0, description="Windows published so far.")


class StreamInfo(_Model):
    id: str
    url: str = Field(description="As registered; a password in it is shown as ***.")
    state: str = Field(
        description="connecting, streaming, degraded, reconnecting, failed or stopped.",
        examples=["streaming"],
    )
    since: str | None = Field(None, description="When it entered that state (UTC, ISO-8601).")
    reason: str | None = Field(None, description="Why, for reconnecting and failed.")
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    last_description: str | None = Field(None, description="Description of its latest window.")
    stats: StreamStats = Field(default_factory=StreamStats)


class JobRequest(_Model):
    """A batch describe (``POST /jobs``): files (only with ``api.allow_local_files``) or URLs."""

    inputs: list[str] = Field(
        min_length=1,
        description="Local paths or globs (when allowed) and URLs of the allowed schemes.",
        examples=[["https://archive.example/clips/dock-0412.mp4"]],
    )
    force: bool = Field(False, description="Describe again inputs that are already done.")


class JobInput(_Model):
    input: str
    source: str | None = Field(None, description="Source id once known.")
    state: JobInputState = "queued"
    error: str | None = Field(None, description="One line, for failed inputs.")
    windows: int = Field(0, ge=0)
    events: int = Field(0, ge=0)


class JobInfo(_Model):
    id: str
    state: JobState = Field(description="partial: done, with some inputs failed.")
    created_at: str | None = None
    finished_at: str | None = None
    inputs: list[JobInput] = Field(default_factory=list)


class SearchHit(_Model):
    window_id: str
    source: str
    start: float
    end: float
    wall_start: str | None = None
    description: str
    score: float = Field(description="Similarity of the query to the window; higher is closer.")


class SearchResult(_Model):
    query: str
    hits: list[SearchHit]


@runtime_checkable
class ServiceBackend(Protocol):
    """The pipeline as the HTTP layer sees it. Each method may be sync or async (module
    docstring); raise ``NotFound``/``Conflict``/``ConfigError``/``MmlmError`` to answer
    404/409/400/502."""

    def add_stream(self, spec: StreamSpec) -> StreamInfo | Awaitable[StreamInfo]:
        """Register and start watching; ``Conflict`` when ``spec.id`` is taken. Returns at
        once (state ``connecting``); the stream keeps running in the pipeline."""
        ...

    def list_streams(self) -> list[StreamInfo] | Awaitable[list[StreamInfo]]:
        """Every registered stream, in a stable order."""
        ...

    def get_stream(self, stream_id: str) -> StreamInfo | Awaitable[StreamInfo]:
        """One stream; ``NotFound`` when unknown."""
        ...

    def remove_stream(self, stream_id: str) -> Awaitable[None] | None:
        """Stop watching and unregister; ``NotFound`` when unknown."""
        ...

    def submit_job(self, request: JobRequest) -> JobInfo | Awaitable[JobInfo]:
        """Queue a batch describe and return at once (state ``queued`` or ``running``)."""
        ...

    def get_job(self, job_id: str) -> JobInfo | Awaitable[JobInfo]:
        """A job's progress; ``NotFound`` when unknown."""
        ...

    def search(
        self, query: str, top_k: int, source: str | None
    ) -> list[SearchHit] | Awaitable[list[SearchHit]]:
        """Windows ranked by similarity to ``query`` (best first, at most ``top_k``), of one
        source or all."""
        ...

    def metrics_text(self) -> str | Awaitable[str]:
        """The pipeline's own metrics in Prometheus text format (``PipelineMetrics``); the API
        appends its own."""
        ...

    def healthy(self) -> bool | Awaitable[bool]:
        """Whether the pipeline can serve (for ``/healthz``); must answer quickly."""
        ...
