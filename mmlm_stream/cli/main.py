"""The ``mmlm-stream`` command line. Each command is a thin shell over a library function."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from mmlm_stream.config import Config, load_config
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.records.channels import DecodeWarning, StreamStatus
from mmlm_stream.util.errors import ConfigError, MmlmError, SourceError

logger = logging.getLogger("mmlm_stream")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _fmt_time(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.2f}s"


def cmd_probe(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.operators.probe import probe

    result = probe(args.target, config.decode)
    if args.json:
        print(result.model_dump_json(indent=2))
        return EXIT_OK
    print(
        f"{result.source}: {result.container_long or result.container}, "
        f"duration {_fmt_time(result.duration)}"
    )
    for s in result.streams:
        chosen = s.index in (result.channels.video, result.channels.audio) or (
            s.index in result.channels.subtitles
        )
        mark = "*" if chosen else " "
        parts = [f"{mark} #{s.index} {s.type:<8} {s.codec}"]
        if s.type == "video":
            parts.append(f"{s.width}x{s.height} {s.fps or '?'} fps")
        elif s.type == "audio":
            parts.append(f"{s.sample_rate} Hz {s.channels} ch")
        elif s.cues is not None:
            parts.append(f"{s.cues} cues")
        if s.language:
            parts.append(f"[{s.language}]")
        print("  " + "  ".join(parts))
    for side in result.sidecars:
        detail = f"{side.cues} cues" if side.error is None else f"unreadable: {side.error}"
        lang = f" [{side.language}]" if side.language else ""
        print(f"  + sidecar {side.path}{lang}: {detail}")
    for note in result.notes:
        print(f"  ! {note}")
    print("  (* = channel the decoder uses)")
    return EXIT_OK


def cmd_decode(args: argparse.Namespace, config: Config) -> int:
    """Decode a source fully and print what each channel produced: a decoder smoke test."""
    from mmlm_stream.operators.decode import decode

    decoder = decode(args.target, config.decode, source_id=args.source)
    started = time.perf_counter()
    problems = 0
    for item in decoder:
        if isinstance(item, DecodeWarning):
            problems += 1
            print(f"warning: {item.reason}", file=sys.stderr)
        elif isinstance(item, StreamStatus):
            print(
                f"{item.source}: {item.state.value}" + (f" ({item.reason})" if item.reason else "")
            )
    elapsed = time.perf_counter() - started
    stats = decoder.stats
    media = (stats.last_time or 0.0) - (stats.first_time or 0.0)
    summary = {
        "source": decoder.spec.source_id,
        "frames": stats.frames,
        "audio_chunks": stats.audio_chunks,
        "audio_seconds": round(stats.audio_samples / 16000, 3),
        "subtitle_cues": stats.cues,
        "warnings": stats.warnings,
        "media_seconds": round(media, 3),
        "wall_seconds": round(elapsed, 3),
        "realtime_factor": round(media / elapsed, 1) if elapsed > 0 else None,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['source']}: {stats.frames} frames, "
            f"{summary['audio_seconds']}s audio in {stats.audio_chunks} chunks, "
            f"{stats.cues} subtitle cues, {stats.warnings} warnings; "
            f"{summary['media_seconds']}s of media decoded in {summary['wall_seconds']}s "
            f"({summary['realtime_factor']}x real time)"
        )
    return EXIT_FAILED if problems else EXIT_OK


def _redis_url(config: Config, embedded: bool) -> str | None:
    """The Redis to publish to; None (with a one-line warning) when none can be reached."""
    from mmlm_stream.bus.redis_client import RedisUnavailable
    from mmlm_stream.bus.redis_server import connect

    try:
        endpoint = connect(config.redis, embedded, on_notice=lambda line: print(line))
    except RedisUnavailable as exc:
        print(f"mmlm-stream: not publishing: {exc}", file=sys.stderr)
        return None
    endpoint.client.close()
    return endpoint.url


def cmd_describe(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.cli import ray_driver as driver

    out = Path(args.out)
    if args.republish:
        from mmlm_stream.bus.redis_bus import RedisPublisher, republish

        url = _redis_url(config, not args.no_embedded_redis)
        if url is None:
            return EXIT_FAILED
        windows = events = 0
        with RedisPublisher(url, config.redis) as publisher:
            for source in args.targets or [None]:
                result = republish(out, source, publisher)
                windows, events = windows + result.windows, events + result.events
        print(f"republished {windows} windows and {events} events from {out}")
        return EXIT_OK
    if not args.targets:
        raise ConfigError("describe needs at least one PATH_OR_GLOB (or --republish)")
    if config.snapshots.dir is None:  # the inputs' evidence goes with their other outputs
        snapshots = config.snapshots.model_copy(update={"dir": (out / "snapshots").resolve()})
        config = config.model_copy(update={"snapshots": snapshots})
    url = _redis_url(config, not args.no_embedded_redis)
    try:
        report = driver.describe(
            args.targets,
            out,
            config,
            address=args.address,
            serve_config=Path(args.serve_config) if args.serve_config else None,
            redis_url=url,
            force=args.force,
            parallel=args.parallel,
            reuse=not args.fresh,
        )
    finally:
        driver.shutdown()
    prefix = config.redis.prefix
    for source in report.done:
        print(
            f"{source}: {out / (source + '.windows.jsonl')} (+ .events.jsonl, .srt, .vtt, "
            f".summary.json)"
        )
        if url:
            print(f"  redis: {prefix}:windows:{source}, {prefix}:events:{source}")
    for source in report.skipped:
        print(f"{source}: already described in {out} (use --force to redo)")
    if report.done and report.wall_s > 0:
        print(
            f"{len(report.done)} done, {len(report.failed)} failed; "
            f"{report.media_s:.0f}s of media in {report.wall_s:.0f}s "
            f"({report.media_s / report.wall_s:.1f}x real time)"
        )
    return report.exit_code


def cmd_watch(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.cli import ray_driver as driver
    from mmlm_stream.cli.watch import watch

    if args.loop:
        decode = config.decode.model_copy(update={"loop": True, "realtime": True})
        config = config.model_copy(update={"decode": decode})
    url = _redis_url(config, not args.no_embedded_redis)
    try:
        return watch(
            args.url,
            config,
            sys.stdout,
            source_id=args.source,
            address=args.address,
            redis_url=url,
            as_json=args.json,
            duration_s=args.duration,
        )
    finally:
        driver.shutdown()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.cli import ray_driver as driver
    from mmlm_stream.service import record as service_record

    # Before Redis or Ray start: an API open beyond loopback needs api.allow_anonymous.
    config.api.require_token_for(args.host)
    if not args.address:  # the ingress runs here and reads the token file: check it now
        config.api.token()
    url = _redis_url(config, not args.no_embedded_redis)
    serve_config = Path(args.serve_config) if args.serve_config else None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    record = None
    try:
        driver.start_ray(args.address)
        if main_thread:  # after ray.init, which installs a handler of its own (exit 15)
            # A plain `kill` stops the service as Ctrl-C does: the record removed, Ray down.
            signal.signal(signal.SIGTERM, _interrupt)
        base = driver.run_service(
            config,
            serve_config,
            url,
            host=args.host,
            port=args.port,
            jobs_dir=Path(args.jobs_dir),
        )
        # `describe` on this machine reuses this service (its Ray, its loaded models).
        record = driver.advertise_service(config, serve_config, url, base)
        print(f"serving on {base} (dashboard {base}/, API docs {base}/docs); Ctrl-C stops")
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if record is not None:
            service_record.remove(record)
        driver.shutdown()
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def cmd_subscribe(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.bus.client import run_subscribe

    return run_subscribe(args, config.redis)


def cmd_sink(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.sinks import open_runner

    if args.name not in config.sinks:
        known = ", ".join(sorted(config.sinks)) or "none configured"
        raise ConfigError(f"sink '{args.name}' is not configured (sinks: {known})")
    url = _redis_url(config, not args.no_embedded_redis)
    if not url:
        raise ConfigError(f"sink '{args.name}' needs Redis: none is configured or answering")
    runner = open_runner(args.name, config, url)
    entry = config.sinks[args.name]
    where = f"{entry.host}:{entry.port}" if entry.kind == "mqtt" else runner.sink.shown
    print(
        f"sink {args.name}: {entry.kind} to {where}, consumer group sink:{args.name}; Ctrl-C stops"
    )
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    if main_thread:
        signal.signal(signal.SIGTERM, _interrupt)
    runner.start()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        while deadline is None or time.monotonic() < deadline:
            if not runner.alive():
                print(f"sink {args.name}: stopped: {runner.stats.last_error}", file=sys.stderr)
                return EXIT_FAILED
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    stats = runner.stats
    print(f"sink {args.name}: {stats.delivered} delivered, {stats.dead} dead-lettered")
    return EXIT_OK


def cmd_sample(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.cli.sample import write_sample

    speech = {"auto": None, "on": True, "off": False}[args.speech]
    info = write_sample(Path(args.out), duration_s=args.duration, speech=speech)
    voiced = "with espeak-ng speech" if info.speech else "without speech (espeak-ng not found)"
    print(
        f"wrote {info.path} ({info.duration:.0f}s, {info.width}x{info.height}, "
        f"{len(info.segments)} photo segments, {len(info.cues)} subtitle cues, {voiced})"
    )
    return EXIT_OK


def _models_config(args: argparse.Namespace, config: Config) -> ModelsConfig:
    if args.set is None:
        return config.models
    return config.models.model_copy(update={"set": args.set})


def cmd_models_list(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.models.inventory import list_models

    rows = list_models(_models_config(args, config))
    if args.json:
        print(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
        return EXIT_OK
    print(f"model set '{_models_config(args, config).set}':")
    for row in rows:
        size = f"{row.size_mb:.0f} MB" if row.size_mb else "size n/a"
        state = "" if row.enabled else "  (disabled in config)"
        print(f"  {row.modality.value:<9} {row.model}{state}")
        print(f"            weights: {row.weights} ({size}, licence {row.licence})")
        print(f"            runs on: {row.device} {row.dtype}")
    return EXIT_OK


def cmd_models_verify(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.models.inventory import verify_models

    models = _models_config(args, config)
    results = verify_models(models)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        for r in results:
            if r.ok:
                print(
                    f"ok      {r.modality.value:<9} {r.model}: loaded in {r.load_s:.1f}s, "
                    f"one inference {r.infer_ms:.0f} ms"
                )
            else:
                print(f"FAILED  {r.modality.value:<9} {r.detail}")
    failed = [r for r in results if not r.ok]
    if failed:
        print(
            f"mmlm-stream: {len(failed)} of {len(results)} models of set '{models.set}' "
            "failed to load",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def cmd_train_fusion(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.models.fusion_head import EpochStats, train_fusion
    from mmlm_stream.operators.source import resolve_source
    from mmlm_stream.pipeline.analysis import SourceAnalysis
    from mmlm_stream.pipeline.encoding import LocalEncoders
    from mmlm_stream.records.evidence import FusedWindow

    if not 0 <= args.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    encoders = LocalEncoders(config.models)

    def windows_for(video: Path) -> Iterable[FusedWindow]:
        print(f"encoding {video} ...", flush=True)
        windows: list[FusedWindow] = []
        SourceAnalysis(
            resolve_source(str(video)),
            config,
            encoders,
            on_window=lambda output: windows.append(output.fused),
        ).run()
        return windows

    def progress(stats: EpochStats) -> None:
        if stats.epoch == 1 or stats.epoch % 10 == 0:
            held = (
                ""
                if stats.val_loss is None
                else f", held-out loss {stats.val_loss:.3f} accuracy {stats.val_accuracy:.0%}"
            )
            print(f"epoch {stats.epoch:>3}: train loss {stats.train_loss:.3f}{held}")

    result = train_fusion(
        args.labels,
        args.out,
        windows_for,
        background=args.background,
        val_fraction=args.val_fraction,
        max_epochs=args.epochs,
        seed=args.seed,
        on_epoch=progress,
    )
    counts = ", ".join(f"{name} {n}" for name, n in result.class_counts.items())
    print(
        f"trained on {result.n_train} windows ({counts}); stopped after {result.epochs} "
        f"epochs, kept epoch {result.best_epoch}"
    )
    if result.val_accuracy is None:
        print("held-out accuracy: n/a (too few windows per class to hold any out)")
    else:
        print(f"held-out accuracy: {result.val_accuracy:.1%} on {result.n_val} windows")
    print(f"wrote {args.out}; set fusion.head: {args.out} in the config to use it")
    return EXIT_OK


def cmd_k8s_render(args: argparse.Namespace, config: Config) -> int:
    from mmlm_stream.deploy import k8s

    text = k8s.render_yaml(
        Path(args.serve_config) if args.serve_config else None,
        image=args.image,
        namespace=args.namespace,
        cpu_node_resource=args.cpu_node_resource,
        shape=k8s.ClusterShape().with_max(args.cpu_workers_max, args.gpu_workers_max),
    )
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmlm-stream", description="Streaming video understanding on Ray Serve."
    )
    parser.add_argument("--config", help="YAML configuration file (MMLM_* variables overlay it)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("probe", help="show the channels a source offers")
    p.add_argument("target", metavar="PATH_OR_URL")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("decode", help="decode a source and summarise its channels")
    p.add_argument("target", metavar="PATH_OR_URL")
    p.add_argument("--source", help="source id (default: derived from the path or URL)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("describe", help="describe videos in batch on Ray, publishing to Redis")
    p.add_argument(
        "targets",
        nargs="*",
        metavar="PATH_OR_GLOB",
        help="files, globs or URLs (with --republish: source ids, default all)",
    )
    p.add_argument("--out", default="out", help="output folder (default: out)")
    p.add_argument("--address", help="join this Ray cluster (default: start a local Ray)")
    p.add_argument("--serve-config", help="Serve config YAML (default: deployments/local-cpu.yaml)")
    p.add_argument("--force", action="store_true", help="redo inputs already described")
    p.add_argument("--parallel", type=int, default=2, help="inputs described at once")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start a private Ray even when a compatible `serve` runs on this machine "
        "(default: reuse it)",
    )
    p.add_argument(
        "--republish", action="store_true", help="publish the files in --out to Redis again"
    )
    p.add_argument(
        "--no-embedded-redis", action="store_true", help="never start the embedded Redis"
    )
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("watch", help="describe one live stream, printing windows and events")
    p.add_argument("url", metavar="URL", help="rtsp://, rtmp://, http(s)://, udp://, srt://, file")
    p.add_argument("--source", help="source id (default: derived from the URL)")
    p.add_argument("--loop", action="store_true", help="loop a file in real time (a test feed)")
    p.add_argument("--address", help="join this Ray cluster (default: start a local Ray)")
    p.add_argument("--json", action="store_true", help="print JSON records")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument(
        "--no-embedded-redis", action="store_true", help="never start the embedded Redis"
    )
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("serve", help="run the service: HTTP API, live streams, dashboard")
    p.add_argument("--address", help="join this Ray cluster (default: start a local Ray)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="HTTP address (default 127.0.0.1); any other than loopback needs api.api_token",
    )
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--serve-config", help="Serve config YAML (default: deployments/local-cpu.yaml)")
    p.add_argument("--jobs-dir", default="jobs", help="where POST /jobs writes its files")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument(
        "--no-embedded-redis", action="store_true", help="never start the embedded Redis"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("subscribe", help="tail events from Redis")
    p.add_argument("--source", help="only this source's events")
    p.add_argument(
        "--type",
        action="append",
        help="only events of these types (comma-separated, or repeated)",
    )
    p.add_argument("--group", help="consumer group: at-least-once delivery, acked")
    p.add_argument("--consumer", help="consumer name within the group (default: host-pid)")
    p.add_argument("--from-start", action="store_true", help="from the first entry kept")
    p.add_argument("--json", action="store_true", help="print raw JSON lines")
    p.add_argument("--count", type=int, help="stop after this many events")
    p.add_argument(
        "--no-embedded-redis", action="store_true", help="never start the embedded Redis"
    )
    p.set_defaults(func=cmd_subscribe)

    p = sub.add_parser("sink", help="run one configured sink (MQTT, webhook) on its own")
    p.add_argument("name", metavar="NAME", help="a key of the config's sinks")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument(
        "--no-embedded-redis", action="store_true", help="never start the embedded Redis"
    )
    p.set_defaults(func=cmd_sink)

    p = sub.add_parser("sample", help="write the bundled sample video")
    p.add_argument("out", metavar="OUT", help="output .mkv path")
    p.add_argument("--duration", type=float, default=30.0, help="length in seconds")
    p.add_argument(
        "--speech",
        choices=["auto", "on", "off"],
        default="auto",
        help="voice the subtitles with espeak-ng (auto: when installed)",
    )
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("train-fusion", help="train the fusion head on labelled time ranges")
    p.add_argument("labels", metavar="LABELS.jsonl", help="labelled ranges, one JSON per line")
    p.add_argument("--out", required=True, metavar="HEAD.safetensors", help="head to write")
    p.add_argument(
        "--background",
        metavar="CLASS",
        help="make windows no labelled range touches examples of this class",
    )
    p.add_argument("--epochs", type=int, default=200, help="most training epochs")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class held out")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the weights")
    p.set_defaults(func=cmd_train_fusion)

    models = sub.add_parser("models", help="list or verify the model set")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("list", cmd_models_list, "show each modality's model, weights, licence and device"),
        ("verify", cmd_models_verify, "load each model and run one inference"),
    ):
        p = models_sub.add_parser(name, help=text)
        p.add_argument("--set", help="model set (default: models.set of the config)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)

    kube = sub.add_parser("k8s", help="Kubernetes (KubeRay) manifests")
    kube_sub = kube.add_subparsers(dest="k8s_command", required=True, metavar="ACTION")
    p = kube_sub.add_parser("render", help="print the RayService rendered from a Serve config")
    p.add_argument("--serve-config", help="Serve config YAML (default: deployments/gpu.yaml)")
    p.add_argument("--image", help="container image (default: the project's, this version)")
    p.add_argument("--namespace", default="mmlm", help="Kubernetes namespace (default: mmlm)")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    p.add_argument(
        "--cpu-node-resource",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep GPU-free deployments on the CPU worker group (default: on)",
    )
    p.add_argument("--cpu-workers-max", type=int, help="most CPU worker pods (default: 8)")
    p.add_argument("--gpu-workers-max", type=int, help="most GPU worker pods (default: 4)")
    p.set_defaults(func=cmd_k8s_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        return args.func(args, config)
    except ConfigError as exc:
        if args.debug:
            raise
        print(f"mmlm-stream: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SourceError as exc:
        if args.debug:
            raise
        print(f"mmlm-stream: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except MmlmError as exc:
        if args.debug:
            raise
        print(f"mmlm-stream: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("mmlm-stream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
