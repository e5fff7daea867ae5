"""``mmlm-stream describe``: many inputs in parallel through the Serve application.

The driver starts (or joins) Ray, runs the application from the Serve config, streams each
input's windows and events back and writes that input's files here (they are the source of
truth; Redis gets the same records from the Publisher deployment). Finished inputs are
skipped unless ``force``; a failing input gets ``<source>.error.json`` and the others go on.
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
from mmlm_stream.errors import SourceError
from mmlm_stream.jobs import (
    DescribeRequest,
    WindowDone,
)
from mmlm_stream.jobs import (
    Progress as JobProgress,
)
from mmlm_stream.operators.decode import check_size
from mmlm_stream.operators.probe import probe
from mmlm_stream.operators.source import SourceSpec, assign_source_ids, resolve_source, scheme_of
from mmlm_stream.outputs import is_done, write_error, write_job
from mmlm_stream.serve_config import default_serve_config, deployment_options

logger = logging.getLogger(__name__)

APP_NAME = "mmlm"
_STARTED_LOCAL = False
_APP = APP_NAME
_DEPLOYED: tuple[str, Any] | None = None


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


def _local_ray_auth() -> None:
    """Token auth for the Ray this process starts: its GCS and raylets listen on every
    interface, and whoever reaches them runs code here. The token is random per process,
    kept only in this process's environment (Ray's processes inherit it), never printed or
    written to disk (Ray's own default would persist ~/.ray/auth_token); a ``RAY_AUTH_TOKEN``
    already set (the user's, or an earlier start's) is kept. Ray caches its config and token
    when first used, so both are reloaded."""
    from ray._raylet import AuthenticationTokenLoader
    from ray._raylet import Config as RayConfig

    os.environ["RAY_AUTH_MODE"] = "token"
    if not os.environ.get("RAY_AUTH_TOKEN", "").strip():
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    RayConfig.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


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
    # A busy machine (or a Ray that just shut down) can make the first start time out.
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
            if attempt == 2 or "timed out during startup" not in str(exc):
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
    would replace every replica and load every model again.
    """
    global _DEPLOYED
    from ray import serve

    from mmlm_stream.deployments.app import build_app

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


async def _describe_one(
    handle: Any,
    state: InputState,
    out_dir: Path,
    config: Config,
    progress: Progress,
    total: TaskID,
) -> None:
    spec = state.spec
    request = DescribeRequest(spec.url, spec.source_id, config.model_dump(mode="json"))

    def seen(message: Any) -> None:
        if isinstance(message, JobProgress):
            _advance(state, message.media_time, progress, total)
        elif isinstance(message, WindowDone):
            state.windows += 1
            _advance(state, message.output.window.start, progress, total)

    result, state.error = await write_job(
        handle.options(stream=True).describe.remote(request),
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
    console: Console | None = None,
) -> DescribeReport:
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


def shutdown() -> None:
    """Remove the application; stop the Ray this process started (a cluster stays up)."""
    import ray
    from ray import serve

    global _DEPLOYED
    _DEPLOYED = None
    if not ray.is_initialized():
        return
    if _STARTED_LOCAL:
        ray.shutdown()  # takes Serve and every replica with it, quietly
    else:
        serve.delete(_APP)
