"""The HTTP API (contract §7): a FastAPI app over a ``ServiceBackend`` and the Redis bus.

``create_app(backend, config, redis_url)`` builds it; ``mmlm-stream serve`` wraps it as the
Serve ingress. Routes: ``/healthz``, ``/metrics``, ``/streams[/{id}]``, ``/jobs[/{id}]``,
``/events`` (Server-Sent Events), ``/search``, ``/`` (the dashboard), OpenAPI at ``/docs``.

Policy, before the backend sees a request:

- Auth: with a token configured every path but ``/healthz`` (and ``/docs``/``/openapi.json``
  with ``open_docs``) needs ``Authorization: Bearer <token>``, compared in constant time;
  ``/events`` also takes ``?token=`` because a browser's EventSource cannot send headers.
  Anything else gets 401 with ``WWW-Authenticate: Bearer``. ``GET /`` without the token is a
  401 too, whose body is the dashboard itself: the page holds no data, asks for the token and
  sends it with every call (so a browser can sign in), while the status tells scripts the truth.
- Host: only the service's own names (``api.allowed_hosts_header``; ``host_header``), so a
  DNS-rebinding page cannot reach a loopback service.
- Sources: stream URLs and job inputs pass the URL policy (``url_policy``: schemes, every
  resolved address, internal ranges only with ``api.allow_internal``, no FFmpeg listen
  options; local files only with ``api.allow_local_files``, inside ``api.local_roots``).
  Refusals are 400 with one reason whatever the cause (the log has the detail); malformed
  bodies 422; bodies over ``api.max_body_bytes`` 413; past ``api.max_streams`` or
  ``api.max_jobs`` 429. Credentials in URLs are shown as ``***``.
- Errors are ``{"detail": "<one line>"}``; backend errors map by type (``service`` module).

``/events`` tails ``{prefix}:events`` (or ``{prefix}:events:{source}``) with XREAD BLOCK on a
connection of its own (closed when the client goes): each message is ``id: <entry id>``,
``event: <type>``, ``data: <event JSON>``. It starts after ``Last-Event-ID`` (the header a
browser sends when it reconnects, else the ``last_event_id`` query parameter), else at the
first entry kept with ``from_start=1``, else at new entries. The first thing sent is a
``retry:`` line and a ``: connected`` comment, after the start position is fixed, so a client
that has read it misses nothing published later. Only the Streams are read: a live source's
events reach them when they open, a file's closed (``redis.publish_open_events``); the
Pub/Sub channel's other versions are not part of this feed. Entries trimmed by retention
before a client resumes are gone; it gets what is left.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import PurePosixPath
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mmlm_stream.bus.client import EVENT_TYPES
from mmlm_stream.bus.redis_bus import BusKeys
from mmlm_stream.bus.redis_client import async_client_for, error_reason
from mmlm_stream.config.api import ApiConfig
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.snapshots import SnapshotsConfig
from mmlm_stream.pipeline.snapshots import MP4, SnapshotStore
from mmlm_stream.security.host_header import HostHeaderCheck
from mmlm_stream.security.url_policy import (
    REFUSED,
    Resolver,
    UrlPolicy,
    UrlRefused,
    api_policy,
    resolve_host,
)
from mmlm_stream.service.metrics import CONTENT_TYPE, ApiMetrics
from mmlm_stream.service.protocol import (
    SOURCE_ID_PATTERN,
    Conflict,
    Invalid,
    JobInfo,
    JobRequest,
    NotFound,
    SearchResult,
    ServiceBackend,
    StreamInfo,
    StreamSpec,
    TooMany,
)
from mmlm_stream.util.backoff import Backoff
from mmlm_stream.util.errors import ConfigError, MmlmError
from mmlm_stream.util.redaction import redact_text, redact_url

logger = logging.getLogger(__name__)

JOB_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
ENTRY_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")
OPEN_PATHS = frozenset({"/healthz"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
_GLOB_CHARS = re.compile(r"[*?\[]")
_SSE_CLIENT_NAME = "mmlm-stream-sse"

StreamIdPath = Annotated[str, Path(pattern=SOURCE_ID_PATTERN, description="Stream id")]
JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="Job id")]
EventIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_.:@-]{1,200}$", description="Event id (a record's id)")
]


class PolicyError(ValueError):
    """A request the API refuses by policy (400); the message is one line."""


# -- source policy ---------------------------------------------------------------------------------


def check_source(
    value: str, config: ApiConfig, *, allow_glob: bool = False, resolve: Resolver = resolve_host
) -> str:
    """``value`` stripped, if the API may hand it to the pipeline (``url_policy``); else
    ``PolicyError``. A refusal by the URL policy has one reason whatever the cause (the
    log has the detail): distinct reasons would let callers map the network."""
    text = value.strip()
    if not text:
        raise PolicyError("empty source")
    if len(text) > config.max_url_chars:
        raise PolicyError(f"longer than {config.max_url_chars} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise PolicyError("contains control characters")
    policy = api_policy(config, resolve)
    try:
        parts = urlsplit(text)
        if parts.scheme.lower() == "file" or (not parts.scheme and text.startswith("/")):
            if parts.scheme and parts.netloc not in ("", "localhost"):
                raise UrlRefused(text, "file:// URLs must not name a host")
            _check_local(unquote(parts.path) if parts.scheme else text, policy, allow_glob)
        else:
            policy.check(text)
    except UrlRefused as exc:
        logger.warning("api: %s: %s", redact_url(text), exc.detail)
        raise PolicyError(f"{redact_url(text)}: {REFUSED}") from None
    except ValueError:
        raise PolicyError(f"{redact_url(text)}: {REFUSED}") from None
    return text


def _check_local(path: str, policy: UrlPolicy, allow_glob: bool) -> None:
    wildcard = _GLOB_CHARS.search(path)
    if wildcard and not allow_glob:
        raise UrlRefused(path, "wildcards are only accepted in job inputs")
    if ".." in PurePosixPath(path).parts:
        raise UrlRefused(path, "a local path must not contain '..'")
    policy.check_local((path[: wildcard.start()] or "/") if wildcard else path)


def _public(info: StreamInfo) -> StreamInfo:
    """The stream as shown to clients: a password in its URL replaced by ***."""
    shown = redact_url(info.url)
    return info if shown == info.url else info.model_copy(update={"url": shown})


def _public_job(info: JobInfo) -> JobInfo:
    """The job as shown to clients: credentials in its inputs and errors masked."""
    inputs = [
        item.model_copy(
            update={
                "input": redact_url(item.input),
                "error": redact_text(item.error) if item.error else item.error,
            }
        )
        for item in info.inputs
    ]
    return info.model_copy(update={"inputs": inputs})


# -- calling the backend ---------------------------------------------------------------------------


async def _call(method: Callable[..., Any], *args: Any) -> Any:
    """Call a backend method on the event loop, awaiting what it returns if awaitable (the
    ``service`` module's contract: sync methods do not block)."""
    result = method(*args)
    if inspect.isawaitable(result):
        return await result
    return result


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "error"


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": _one_line(detail)}, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    where = ".".join(loc)
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


# -- middleware ------------------------------------------------------------------------------------


def _relative_path(scope: Scope) -> str:
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class _Auth:
    """Bearer token on every path but the open ones (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        open_docs: bool,
        dashboard: tuple[bytes, str],
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.open_paths = OPEN_PATHS | DOCS_PATHS if open_docs else OPEN_PATHS
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        path = _relative_path(scope)
        if path in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = self._given(scope, path)
        if given is not None and hmac.compare_digest(given.encode(), self.token):
            await self.app(scope, receive, send)
            return
        challenge = 'Bearer realm="mmlm-stream"'
        if given is not None:
            challenge += ', error="invalid_token"'
        headers = {"WWW-Authenticate": challenge}
        if path == "/" and scope["method"] in ("GET", "HEAD"):
            body, policy = self.dashboard
            headers["Content-Security-Policy"] = policy
            page = HTMLResponse(body, status_code=401, headers=headers)
            await page(scope, receive, send)
            return
        reason = "invalid API token" if given is not None else "missing API token"
        await _error(401, f"{reason} (send Authorization: Bearer <token>)", headers)(
            scope, receive, send
        )

    @staticmethod
    def _given(scope: Scope, path: str) -> str | None:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credential = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credential.strip():
                    return credential.strip()
        if path == "/events":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            tokens = query.get("token")
            if tokens:
                return tokens[-1]
        return None


class _BodyLimit:
    """413 for request bodies over the limit, by Content-Length or as they stream in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _error(413, f"request body larger than {self.limit} bytes")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await too_large(scope, receive, send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"request body larger than {self.limit} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await too_large(scope, receive, send)


class _Observe:
    """Counts answers by route and status and times them; adds the headers every answer gets."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                label = getattr(route, "path", None) or "other"
                status = str(message["status"])
                if status == "401":
                    label = "unauthorized"  # never routed: keeps unknown paths out of labels
                self.metrics.requests.labels(scope["method"], label, status).inc()
                self.metrics.latency.labels(label).observe(time.perf_counter() - began)
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, observing_send)


# -- server-sent events ----------------------------------------------------------------------------


class _EventStreamResponse(StreamingResponse):
    """A streaming response that stops as soon as the client goes, whatever the ASGI server,
    then runs ``on_close`` (shielded: the Redis connection is closed even when cancelled)."""

    media_type = "text/event-stream"

    def __init__(
        self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(
            content,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass  # the client went while we were writing
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.on_close()


def _sse_message(entry_id: str, raw: str | None, types: frozenset[str] | None) -> bytes | None:
    """One SSE message for a Redis entry, or None when unreadable or filtered out."""
    if raw is None:
        return None
    try:
        event = json.loads(raw)
    except ValueError:
        logger.debug("events: entry %s is not JSON; skipped", entry_id)
        return None
    kind = event.get("type") if isinstance(event, dict) else None
    if not isinstance(kind, str) or (types is not None and kind not in types):
        return None
    data = "".join(f"data: {line}\n" for line in raw.splitlines() or [""])
    return f"id: {entry_id}\nevent: {kind}\n{data}\n".encode()


def _async_client(url: str, redis_config: RedisConfig, read_timeout_s: float) -> aioredis.Redis:
    """A connection for one SSE client: a read timeout longer than one blocking read."""
    return async_client_for(
        url,
        redis_config,
        socket_timeout=read_timeout_s,
        client_name=_SSE_CLIENT_NAME,
        decode_responses=True,
    )


class _EventFeed:
    """Opens, runs and closes ``/events`` connections, within ``sse_max_clients``."""

    def __init__(
        self,
        url: str | None,
        config: ApiConfig,
        redis_config: RedisConfig,
        metrics: ApiMetrics,
    ) -> None:
        self.url = url
        self.config = config
        self.redis_config = redis_config
        self.keys = BusKeys(redis_config.prefix)
        self.metrics = metrics
        self.clients = 0

    async def open(
        self, source: str | None, types: frozenset[str] | None, after: str | None
    ) -> _EventStreamResponse:
        if self.url is None:
            raise HTTPException(503, "no Redis is configured, so there are no events to stream")
        if self.clients >= self.config.sse_max_clients:
            raise HTTPException(
                503, f"too many event clients ({self.config.sse_max_clients}); try again later"
            )
        key = self.keys.events(source)
        heartbeat = self.config.sse_heartbeat_s
        client = _async_client(self.url, self.redis_config, heartbeat + 10.0)
        self.clients += 1
        self.metrics.sse_clients.inc()
        closed = False

        async def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            self.clients -= 1
            self.metrics.sse_clients.dec()
            try:
                await client.aclose()
            except redis.RedisError:
                pass

        try:
            start = after if after is not None else await self._newest(client, key)
        except redis.RedisError as exc:
            await close()
            raise HTTPException(
                503, f"Redis {redact_url(self.url)}: {error_reason(exc)}", {"Retry-After": "5"}
            ) from None
        except BaseException:
            await close()
            raise
        return _EventStreamResponse(self._stream(client, key, start, types), close)

    @staticmethod
    async def _newest(client: aioredis.Redis, key: str) -> str:
        """The id of the stream's last entry now ("0-0" when empty): resolving ``$`` once, so
        nothing added between two blocking reads is missed."""
        last = await client.xrevrange(key, count=1)
        return str(last[0][0]) if last else "0-0"

    async def _stream(
        self, client: aioredis.Redis, key: str, last: str, types: frozenset[str] | None
    ) -> AsyncIterator[bytes]:
        config = self.config
        block_ms = max(10, round(config.sse_heartbeat_s * 1000))
        yield f"retry: {config.sse_retry_ms}\n: connected\n\n".encode()
        sent_at = time.monotonic()
        backoff = Backoff(initial=0.2, maximum=5.0)
        down_since: float | None = None
        while True:
            try:
                reply = await client.xread({key: last}, count=config.sse_batch, block=block_ms)
            except redis.RedisError as exc:
                if not isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                    logger.warning("events: %s: %s; closing the feed", key, error_reason(exc))
                    yield f": error: {_one_line(error_reason(exc))}\n\n".encode()
                    return
                if down_since is None:
                    down_since = time.monotonic()
                    logger.warning("events: %s; retrying", error_reason(exc))
                if time.monotonic() - sent_at >= config.sse_heartbeat_s:
                    yield b": redis unavailable, retrying\n\n"
                    sent_at = time.monotonic()
                await anyio.sleep(backoff.next_delay())
                continue
            if down_since is not None:
                logger.warning(
                    "events: Redis reachable again after %.1fs", time.monotonic() - down_since
                )
                down_since = None
                backoff.reset()
            for entry_id, fields in reply[0][1] if reply else []:
                last = entry_id
                message = _sse_message(entry_id, (fields or {}).get("json"), types)
                if message is not None:
                    yield message
                    self.metrics.sse_events.inc()
                    sent_at = time.monotonic()
            if time.monotonic() - sent_at >= config.sse_heartbeat_s:
                yield b": keepalive\n\n"
                sent_at = time.monotonic()


def _event_types(values: list[str] | None) -> frozenset[str] | None:
    if not values:
        return None
    types = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = sorted(types - EVENT_TYPES)
    if unknown:
        raise PolicyError(
            f"unknown event type '{unknown[0]}' (known: {', '.join(sorted(EVENT_TYPES))})"
        )
    return frozenset(types) or None


# -- the dashboard ---------------------------------------------------------------------------------


def _dashboard() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy: its inline script and style are allowed by
    hash, nothing else runs, and it talks to this origin only."""
    template = resources.files("mmlm_stream.service") / "static" / "dashboard.html"
    text = template.read_text(encoding="utf-8").replace(
        "__EVENT_TYPES__", json.dumps(sorted(EVENT_TYPES))
    )
    page = text.encode()

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL)
        digests = [
            base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() for block in blocks
        ]
        return " ".join(f"'sha256-{digest}'" for digest in digests)

    policy = (
        "default-src 'none'; "
        f"script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return page, policy


# -- the application -------------------------------------------------------------------------------


def create_app(
    backend: ServiceBackend,
    config: ApiConfig,
    redis_url: str | None,
    *,
    redis_config: RedisConfig | None = None,
    resolve: Resolver = resolve_host,
    bind_host: str | None = "127.0.0.1",
    snapshots: SnapshotsConfig | None = None,
) -> FastAPI:
    """The API over ``backend``; ``/events`` reads the Redis at ``redis_url`` (None: 503),
    with ``redis_config``'s key prefix, timeouts and TLS files; ``resolve`` looks up the
    hosts of source URLs (tests map names to addresses); ``bind_host``, the address it is
    served on (None: unknown), gives the default Host header allow-list. Raises
    ``ConfigError`` when the token file cannot be read."""
    token = config.token()
    redis_config = redis_config or RedisConfig()
    metrics = ApiMetrics()
    feed = _EventFeed(redis_url, config, redis_config, metrics)
    page, page_policy = _dashboard()

    app = FastAPI(
        title="mmlm-stream",
        version=_version(),
        description=(
            "Live and batch video understanding: manage live streams, submit batch jobs, "
            "follow events (Server-Sent Events), search window descriptions."
        ),
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.metrics = metrics
    app.state.backend = backend

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_detail(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> Response:
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(PolicyError)
    async def _policy(_: Request, exc: PolicyError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(MmlmError)
    async def _backend_error(_: Request, exc: MmlmError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return _error(404, str(exc))
        if isinstance(exc, Conflict):
            return _error(409, str(exc))
        if isinstance(exc, TooMany):
            return _error(429, str(exc), {"Retry-After": "30"})
        if isinstance(exc, ConfigError | Invalid):
            return _error(400, str(exc))
        logger.warning("api: pipeline error: %s", exc)
        return _error(502, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.error("api: unexpected error", exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__})")

    # -- routes --------------------------------------------------------------------------------

    @app.get("/healthz", tags=["service"], summary="Liveness and readiness")
    async def healthz() -> JSONResponse:
        try:
            with anyio.fail_after(config.health_timeout_s):
                ok = bool(await _call(backend.healthy))
        except TimeoutError:
            return JSONResponse({"ok": False, "detail": "pipeline did not answer"}, 503)
        except Exception as exc:
            logger.warning("api: health check failed: %s", exc)
            return JSONResponse({"ok": False, "detail": _one_line(str(exc))}, 503)
        return JSONResponse({"ok": ok}, 200 if ok else 503)

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
    )
    async def prometheus() -> PlainTextResponse:
        try:
            pipeline = str(await _call(backend.metrics_text))
            metrics.backend_up.set(1)
        except Exception as exc:
            logger.warning("api: pipeline metrics unavailable: %s", exc)
            pipeline = ""
            metrics.backend_up.set(0)
        if pipeline and not pipeline.endswith("\n"):
            pipeline += "\n"
        return PlainTextResponse(pipeline + metrics.exposition(), media_type=CONTENT_TYPE)

    @app.post(
        "/streams",
        status_code=201,
        response_model=StreamInfo,
        tags=["streams"],
        summary="Start watching a live stream",
        responses={
            400: {"description": "URL refused by policy"},
            409: {"description": "Id taken"},
            429: {"description": "api.max_streams reached"},
        },
    )
    async def add_stream(spec: StreamSpec, response: Response) -> StreamInfo:
        url = await anyio.to_thread.run_sync(
            partial(check_source, spec.url, config, resolve=resolve)
        )
        local = not urlsplit(url).scheme or urlsplit(url).scheme.lower() == "file"
        if spec.loop and not local:
            raise PolicyError("loop applies to local files only")
        info: StreamInfo = await _call(backend.add_stream, spec.model_copy(update={"url": url}))
        response.headers["Location"] = f"streams/{info.id}"
        return _public(info)

    @app.get("/streams", response_model=list[StreamInfo], tags=["streams"], summary="All streams")
    async def list_streams() -> list[StreamInfo]:
        return [_public(info) for info in await _call(backend.list_streams)]

    @app.get("/streams/{stream_id}", response_model=StreamInfo, tags=["streams"])
    async def get_stream(stream_id: StreamIdPath) -> StreamInfo:
        return _public(await _call(backend.get_stream, stream_id))

    @app.delete(
        "/streams/{stream_id}",
        status_code=204,
        response_class=Response,
        tags=["streams"],
        summary="Stop watching and unregister",
    )
    async def remove_stream(stream_id: StreamIdPath) -> Response:
        await _call(backend.remove_stream, stream_id)
        return Response(status_code=204)

    @app.post(
        "/jobs",
        status_code=202,
        response_model=JobInfo,
        tags=["jobs"],
        summary="Describe files or URLs in a batch",
        responses={
            400: {"description": "An input refused by policy"},
            429: {"description": "api.max_jobs reached"},
        },
    )
    async def submit_job(request: JobRequest, response: Response) -> JobInfo:
        if len(request.inputs) > config.max_job_inputs:
            raise PolicyError(f"more than {config.max_job_inputs} inputs in one job")
        inputs = []
        for value in request.inputs:
            check = partial(check_source, value, config, allow_glob=True, resolve=resolve)
            inputs.append(await anyio.to_thread.run_sync(check))
        info: JobInfo = await _call(
            backend.submit_job, request.model_copy(update={"inputs": inputs})
        )
        response.headers["Location"] = f"jobs/{info.id}"
        return _public_job(info)

    @app.get("/jobs/{job_id}", response_model=JobInfo, tags=["jobs"], summary="A job's progress")
    async def get_job(job_id: JobIdPath) -> JobInfo:
        return _public_job(await _call(backend.get_job, job_id))

    @app.get("/search", response_model=SearchResult, tags=["search"], summary="Find windows")
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=1000, description="What to look for")],
        top_k: Annotated[int, Query(ge=1, description="At most api.search_max_top_k")] = 10,
        source: Annotated[str | None, Query(pattern=SOURCE_ID_PATTERN)] = None,
    ) -> SearchResult:
        if top_k > config.search_max_top_k:
            raise PolicyError(f"top_k must be at most {config.search_max_top_k}")
        hits = await _call(backend.search, q, top_k, source)
        return SearchResult(query=q, hits=list(hits)[:top_k])

    @app.get(
        "/events",
        tags=["events"],
        summary="Events as Server-Sent Events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
    )
    async def events(
        source: Annotated[
            str | None,
            Query(pattern=SOURCE_ID_PATTERN, description="One source's events; default: all"),
        ] = None,
        types_: Annotated[
            list[str] | None,
            Query(alias="type", description="Keep these event types (repeat or comma-separate)"),
        ] = None,
        last_event_id: Annotated[
            str | None,
            Query(description="Start after this entry id (the Last-Event-ID header wins)"),
        ] = None,
        from_start: Annotated[
            bool, Query(description="Without a last id: from the first entry kept")
        ] = False,
        token: Annotated[
            str | None, Query(description="The API token, for clients that cannot send headers")
        ] = None,
        last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> Response:
        types = _event_types(types_)
        after = (last_event_id_header or last_event_id or "").strip() or None
        if after is not None and not ENTRY_ID.match(after):
            raise PolicyError(f"'{after[:40]}' is not a Redis stream entry id")
        if after is None and from_start:
            after = "0-0"
        return await feed.open(source, types, after)

    store = SnapshotStore(snapshots) if snapshots is not None else None
    shots = store if snapshots is not None and snapshots.enabled else None

    @app.get(
        "/events/{event_id}/snapshot.jpg",
        tags=["events"],
        summary="An event's snapshot",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "The JPEG"},
            404: {"description": "No snapshot for this event (none taken, or deleted)"},
        },
    )
    async def snapshot(event_id: EventIdPath) -> Response:
        data = await asyncio.to_thread(shots.read, event_id) if shots is not None else None
        if data is None:
            raise NotFound(f"no snapshot of event '{event_id}'")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    @app.get(
        "/events/{event_id}/clip.mp4",
        tags=["events"],
        summary="An event's clip (live streams with clips.enabled)",
        response_class=Response,
        responses={
            200: {"content": {"video/mp4": {}}, "description": "The MP4"},
            404: {"description": "No clip (clips off, not written yet, or deleted)"},
        },
    )
    async def clip(event_id: EventIdPath) -> Response:
        data = await asyncio.to_thread(store.read, event_id, MP4) if store is not None else None
        if data is None:
            raise NotFound(f"no clip of event '{event_id}'")
        return Response(data, media_type="video/mp4", headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": page_policy})

    _secure_openapi(app, token is not None)
    app.add_middleware(_BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(
        _Auth, token=token, open_docs=config.open_docs, dashboard=(page, page_policy)
    )
    app.add_middleware(HostHeaderCheck, patterns=config.host_header_patterns(bind_host))
    app.add_middleware(_Observe, metrics=metrics)
    return app


def _version() -> str:
    try:
        return version("mmlm-stream")
    except PackageNotFoundError:
        return "0"


def _secure_openapi(app: FastAPI, enabled: bool) -> None:
    """Declare the bearer scheme in the schema (so /docs has an Authorize button)."""
    if not enabled:
        return
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
        }
        for path, operations in schema.get("paths", {}).items():
            if path in OPEN_PATHS:
                continue
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
