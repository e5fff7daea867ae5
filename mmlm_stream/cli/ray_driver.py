"""``mmlm-stream describe``: many inputs in parallel through the Serve application.

The driver starts (or joins) Ray, runs the application from the Serve config, streams each
input's windows and events back and writes that input's files here (they are the source of
truth; Redis gets the same records from the Publisher deployment). Finished inputs are
skipped unless ``force``; a failing input gets ``<source>.error.json`` and the others go on.

With ``reuse``, a compatible ``mmlm-stream serve`` running on this machine does the work
instead (``mmlm_stream.service.record``): the driver joins its Ray and calls its Decoder, so
no Ray starts and no model loads; the files are written here exactly as on the cold path.
The service's application is never redeployed or removed; anything amiss is one line and
the cold path.
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from mmlm_stream.config import Config
from mmlm_stream.config.paths import absolute_paths
from mmlm_stream.deploy.serve_config import default_serve_config, deployment_options
from mmlm_stream.operators.decode import check_size
from mmlm_stream.operators.probe import probe
from mmlm_stream.operators.source import SourceSpec, assign_source_ids, resolve_source, scheme_of
from mmlm_stream.pipeline.jobs import (
    AnalysisRequest,
    WindowDone,
)
from mmlm_stream.pipeline.jobs import (
    Progress as JobProgress,
)
from mmlm_stream.pipeline.outputs import is_done, write_error, write_job
from mmlm_stream.service import record as service_record
from mmlm_stream.util.errors import MmlmError, SourceError
from mmlm_stream.util.redaction import MASK, redact_text

logger = logging.getLogger(__name__)

APP_NAME = "mmlm"
DECODER = "Decoder"
_STARTED_LOCAL = False
# The Decoder handle of the running service this process joined (None: none): its
# application is never redeployed or removed from here.
_JOINED: Any | None = None
_APP = APP_NAME
_DEPLOYED: tuple[str, Any] | None = None
_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_GCS_PROBE_S = 2.0


@dataclass
class InputState:
    spec: SourceSpec
    duration: float | None = None
    done_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    task: TaskID | None = None
    error: str | None = None
    windows: int = 0


@dataclass
class DescribeReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    out_dir: Path = Path("out")
    media_s: float = 0.0
    wall_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Globs expand to files (sorted); URLs and literal paths pass through as given."""
    targets: list[str] = []
    for pattern in patterns:
        if scheme_of(pattern) or not glob.has_magic(pattern):
            targets.append(pattern)
            continue
        matches = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if Path(p).is_file())
        targets.extend(matches or [pattern])
    return targets


def _local_ray_auth(token: str | None = None) -> None:
    """Token auth for the Ray this process starts: its GCS and raylets listen on every
    interface, and whoever reaches them runs code here. The token is random per process,
    kept only in this process's environment (Ray's processes inherit it) and, for a
    ``serve``, in its user-private service record; never printed, and never in Ray's own
    ~/.ray/auth_token. A ``RAY_AUTH_TOKEN`` already set (the user's, or an earlier start's)
    is kept; ``token`` (a running service's, to join it) replaces it. Ray caches its config
    and token when first used, so both are reloaded."""
    os.environ["RAY_AUTH_MODE"] = "token"
    if token is not None:
        os.environ["RAY_AUTH_TOKEN"] = token
    elif not os.environ.get("RAY_AUTH_TOKEN", "").strip():
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    _reload_ray_auth()


def _reload_ray_auth() -> None:
    from ray._raylet import AuthenticationTokenLoader
    from ray._raylet import Config as RayConfig

    RayConfig.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _slow_start(exc: BaseException) -> bool:
    """Whether a local Ray start failed only because a process was slow to come up."""
    text = str(exc)
    return "timed out during startup" in text or (
        "Timed out waiting for file" in text and "_port" in text
    )


def start_ray(address: str | None) -> None:
    """Join ``address`` with whatever auth the cluster uses (``RAY_AUTH_*`` as set), or
    start a private local Ray with token auth (never a stale cluster)."""
    import ray

    global _STARTED_LOCAL
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    _STARTED_LOCAL = not address
    global _APP
    # On a shared cluster a CLI run gets its own application, so it never replaces (or, at
    # the end, deletes) the service's "mmlm" application.
    _APP = APP_NAME if not address else f"{APP_NAME}-cli-{os.getpid()}"
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return
    _local_ray_auth()
    # A busy machine (or a Ray that just shut down) can make the first start time out: the
    # raylet ("timed out during startup") or the GCS, whose port file never appears.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    for attempt in (1, 2):
        try:
            ray.init(
                address="local",
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
            return
        except Exception as exc:
            if attempt == 2 or not _slow_start(exc):
                raise
            logger.warning("local Ray did not start in time; trying once more")
            ray.shutdown()
            time.sleep(3)


def run_service(
    config: Config,
    serve_config: Path | None,
    redis_url: str | None,
    *,
    host: str,
    port: int,
    jobs_dir: Path,
) -> str:
    """Deploy the application behind its HTTP ingress; returns the base URL."""
    from ray import serve

    from mmlm_stream.deployments.app import build_app

    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
    options = deployment_options(serve_config or default_serve_config())
    args = {
        "config": config.model_dump(mode="json"),
        "deployments": options,
        "redis_url": redis_url or "",
        "service": True,
        "http_host": host,
        "jobs_dir": str(jobs_dir.resolve()),
    }
    serve.run(build_app(args), name=_APP, route_prefix="/")
    return f"http://{host}:{port}"


def run_app(config: Config, serve_config: Path | None, redis_url: str | None) -> Any:
    """Deploy the application with the Serve config's options; returns the Decoder handle.

    A second call with the same arguments reuses the running application: redeploying
    would replace every replica and load every model again. After ``join_service`` it is
    the joined service's Decoder, whose application this process must never replace.
    """
    global _DEPLOYED
    from ray import serve

    from mmlm_stream.deployments.app import build_app

    if _JOINED is not None:
        return _JOINED
    options = deployment_options(serve_config or default_serve_config())
    args = {
        "config": config.model_dump(mode="json"),
        "deployments": options,
        "redis_url": redis_url,
    }
    key = json.dumps(args, sort_keys=True, default=str)
    if _DEPLOYED is not None and _DEPLOYED[0] == key:
        return _DEPLOYED[1]
    handle = serve.run(build_app(args), name=_APP, route_prefix=None)
    _DEPLOYED = (key, handle)
    return handle


def _fingerprint(config: Config, serve_config: Path | None, redis_url: str | None) -> str:
    options = deployment_options(serve_config or default_serve_config())
    return service_record.fingerprint(config, redis_url, options)


def advertise_service(
    config: Config, serve_config: Path | None, redis_url: str | None, base_url: str
) -> Path | None:
    """Write the record through which ``describe`` on this machine reuses the service that
    ``run_service`` deployed; None (nothing written) when it runs on a cluster this process
    did not start. The caller removes the file when the service stops."""
    import ray

    if not _STARTED_LOCAL or not ray.is_initialized():
        return None
    pid = os.getpid()
    started = service_record.process_started(pid)
    if started is None:
        return None
    record = service_record.ServiceRecord(
        pid=pid,
        started=started,
        gcs_address=ray.get_runtime_context().gcs_address,
        app=_APP,
        fingerprint=_fingerprint(config, serve_config, redis_url),
        url=base_url,
        token=os.environ["RAY_AUTH_TOKEN"],
    )
    return service_record.write(record)


class _ServiceUnusable(MmlmError):
    """The running service cannot take the describe; the message says why, in one line."""


def join_service(record: service_record.ServiceRecord) -> Any:
    """Join the Ray of a running service with its token and return its Decoder handle.

    On any failure this process is left as before (no Ray, the ``RAY_AUTH_*`` variables it
    had) and ``_ServiceUnusable`` says why."""
    import socket

    import ray
    from ray import serve

    global _JOINED, _APP
    host, _, port = record.gcs_address.rpartition(":")
    try:  # a GCS that is not there would keep ray.init waiting for a minute
        socket.create_connection((host, int(port)), timeout=_GCS_PROBE_S).close()
    except (OSError, ValueError) as exc:
        raise _ServiceUnusable(f"its Ray does not answer at {record.gcs_address} ({exc})") from None
    saved = {name: os.environ.get(name) for name in _AUTH_ENV}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    try:
        _local_ray_auth(record.token)
        ray.init(address=record.gcs_address, logging_level=logging.WARNING, log_to_driver=False)
        app = serve.status().applications.get(record.app)
        if app is None or app.status != "RUNNING":
            state = "gone" if app is None else str(getattr(app.status, "value", app.status)).lower()
            raise _ServiceUnusable(f"its application '{record.app}' is {state}")
        handle = serve.get_deployment_handle(DECODER, app_name=record.app)
    except Exception as exc:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _reload_ray_auth()
        if isinstance(exc, _ServiceUnusable):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = redact_text(reason.replace(record.token, MASK))
        raise _ServiceUnusable(f"joining its Ray failed: {reason}") from None
    _JOINED, _APP = handle, record.app
    return handle


def _reuse_service(
    config: Config, serve_config: Path | None, redis_url: str | None, console: Console
) -> Any | None:
    """The Decoder handle of a compatible running service, or None (one line says why when
    a service record was there but not used)."""
    lookup = service_record.find(_fingerprint(config, serve_config, redis_url))
    record = lookup.record
    if record is None:
        if lookup.notes:
            _say(
                console,
                f"not reusing a running service: {'; '.join(lookup.notes)}; starting a private Ray",
            )
        return None
    try:
        handle = join_service(record)
    except _ServiceUnusable as exc:
        _say(
            console,
            f"not reusing the running service (pid {record.pid}): {exc}; starting a private Ray",
        )
        return None
    _say(
        console,
        f"reusing the running service (pid {record.pid}, {record.url}): "
        "no Ray start, models already loaded",
    )
    return handle


def _say(console: Console, line: str) -> None:
    console.print(f"mmlm-stream: {line}", markup=False, highlight=False, soft_wrap=True)


def _request(spec: SourceSpec, config: Config) -> AnalysisRequest:
    """The request for one input. A joined service's replicas run in another working
    directory, so there a relative path (the input's, the config's) is made absolute."""
    if _JOINED is None:
        return AnalysisRequest(spec.url, spec.source_id, config)
    target = os.path.abspath(spec.url) if spec.path is not None else spec.url
    return AnalysisRequest(target, spec.source_id, absolute_paths(config))


async def _describe_one(
    handle: Any,
    state: InputState,
    out_dir: Path,
    config: Config,
    progress: Progress,
    total: TaskID,
) -> None:
    spec = state.spec
    request = _request(spec, config)

    def seen(message: Any) -> None:
        if isinstance(message, JobProgress):
            _advance(state, message.media_time, progress, total)
        elif isinstance(message, WindowDone):
            state.windows += 1
            _advance(state, message.output.window.start, progress, total)

    result, state.error = await write_job(
        handle.options(stream=True).analyse.remote(request),
        out_dir,
        spec.source_id,
        spec.url,
        config.window.hop_s,
        on_message=seen,
        describer=config.describer,
    )
    if result is not None:
        _advance(state, result.duration or state.done_s, progress, total)


class MediaSeconds(ProgressColumn):
    """``done/total s``, or ``done s`` for an input of unknown length (a stream): a format
    of ``total`` alone fails on None and took the whole ``describe`` down."""

    def render(self, task: Task) -> Text:
        total = f"/{task.total:.1f}" if task.total is not None else ""
        return Text(f"{task.completed:>7.1f}{total} s")


def _advance(state: InputState, media_time: float, progress: Progress, total: TaskID) -> None:
    if media_time <= state.done_s:
        return
    delta = media_time - state.done_s
    state.done_s = media_time
    elapsed = max(time.monotonic() - state.started, 1e-6)
    if state.task is not None:
        progress.update(
            state.task,
            completed=media_time,
            rtf=f"{media_time / elapsed:.1f}x",
        )
    progress.update(total, advance=delta)


async def _run_all(
    handle: Any,
    states: list[InputState],
    out_dir: Path,
    config: Config,
    parallel: int,
    console: Console,
) -> None:
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MediaSeconds(),
        TextColumn("{task.fields[rtf]:>7}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        grand = sum(s.duration or 0.0 for s in states) or None
        total = progress.add_task("total", total=grand, rtf="")
        for state in states:
            state.task = progress.add_task(state.spec.source_id[:28], total=state.duration, rtf="")
        gate = asyncio.Semaphore(parallel)

        async def one(state: InputState) -> None:
            async with gate:
                state.started = time.monotonic()
                try:
                    await _describe_one(handle, state, out_dir, config, progress, total)
                except Exception as exc:  # a broken input or pipeline call: record, go on
                    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    state.error = f"{state.spec.url}: {reason}"
                    write_error(out_dir, state.spec.source_id, state.spec.url, state.error)

        await asyncio.gather(*(one(state) for state in states))


def describe(
    patterns: Sequence[str],
    out_dir: Path,
    config: Config,
    *,
    address: str | None = None,
    serve_config: Path | None = None,
    redis_url: str | None = None,
    force: bool = False,
    parallel: int = 2,
    reuse: bool = False,
    console: Console | None = None,
) -> DescribeReport:
    """Describe the inputs (module docstring); ``reuse``: through a compatible running
    local service when there is one (never with ``address``, or with Ray already up here)."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    report = DescribeReport(out_dir=out_dir)
    targets = expand_inputs(patterns)
    states: list[InputState] = []
    for target, source_id in zip(targets, assign_source_ids(targets), strict=True):
        spec = resolve_source(target, source_id)
        if not force and is_done(out_dir, source_id):
            report.skipped.append(source_id)
            continue
        try:
            check_size(spec, config.jobs)
            info = probe(spec, config.decode, count_cues=False)
        except SourceError as exc:
            write_error(out_dir, source_id, spec.url, str(exc))
            report.failed[source_id] = str(exc)
            console.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
            continue
        states.append(InputState(spec, duration=info.duration))
    if states:
        handle = _JOINED
        if handle is None and reuse and address is None and not _ray_initialized():
            handle = _reuse_service(config, serve_config, redis_url, console)
        if handle is None:
            start_ray(address)
            handle = run_app(config, serve_config, redis_url)
        asyncio.run(_run_all(handle, states, out_dir, config, parallel, console))
        if redis_url and not handle.flush_publisher.remote().result():
            console.print(
                "[yellow]warning[/yellow] some records are not in Redis yet; "
                "run `describe --republish` when it is back",
                highlight=False,
            )
    for state in states:
        if state.error is not None:
            report.failed[state.spec.source_id] = state.error
            console.print(f"[red]error[/red] {state.error}", highlight=False, soft_wrap=True)
        else:
            report.done.append(state.spec.source_id)
            report.media_s += state.duration or state.done_s
    report.wall_s = time.monotonic() - started
    return report


def _ray_initialized() -> bool:
    import ray

    return ray.is_initialized()


def shutdown() -> None:
    """Remove the application; stop the Ray this process started (a cluster stays up); from
    a service it joined, only disconnect (its application and Ray stay as they are)."""
    import ray
    from ray import serve

    global _DEPLOYED, _JOINED
    _DEPLOYED = None
    joined, _JOINED = _JOINED is not None, None
    if not ray.is_initialized():
        return
    if joined or _STARTED_LOCAL:
        ray.shutdown()  # joined: disconnects; started here: takes Serve and replicas with it
    else:
        serve.delete(_APP)
