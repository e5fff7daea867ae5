"""Fuzz: mutated media through the decode operator and through ``describe``.

The inputs are the fuzz suite's (``tests/fuzz/mutate.py``): small seeds (MKV, MP4, MPEG-TS,
Y4M, IVF, BMP, WAV, AVI; 64x48, 1.5 s) truncated, bit-flipped, overwritten, spliced, with
timestamps that jump or wrap, headers that claim huge pictures, 1 MB subtitle cues of ``{``
or ``<a``, noise and empty files. ``--inputs`` of them (the issue's cases, then draws of
each mutation family in turn) go through the decode operator in a child process with a
time budget per input (``--budget-s``: no answer is a hang); the first ``--describe`` of
them, plus an HTTP stream on 127.0.0.1 that never ends, go through ``describe`` on a local
Ray (the ``--models`` set, ``jobs.max_duration_s`` 20 s). A service crash is an input whose
error is not one line naming it, a Serve replica that died, or ``describe`` itself failing.

Baseline in the same run: the clean seeds through the same decode path; the ratio of decode
time per mutated input to per clean input is printed.
Last line: ``inputs=N service_crashes=C hangs=H max_rss_mb=M`` (N: inputs through the decode
operator; M: the larger of the decoding child's peak RSS and the Decoder replica's).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT / "tests", ROOT / "tests" / "chaos"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import psutil  # noqa: E402
from fuzz import mutate  # noqa: E402
from fuzz.endless import EndlessTs  # noqa: E402
from fuzz.worker import DecodeWorker  # noqa: E402
from media import mpegts_bytes  # noqa: E402

from mmlm_stream.cli import ray_driver as driver  # noqa: E402
from mmlm_stream.config import Config  # noqa: E402
from mmlm_stream.config.jobs import JobsConfig  # noqa: E402
from mmlm_stream.config.models import ModelsConfig  # noqa: E402
from mmlm_stream.util.threads import limit_threads  # noqa: E402

MAX_DURATION_S = 20.0


def mutations(n: int) -> list[mutate.Mutation]:
    """The issue's cases, then each family's draws in turn, ``n`` in all."""
    per_family = n // len(mutate.FAMILIES) + 1
    drawn = [mutate.draw(family, per_family) for family in mutate.FAMILIES.values()]
    mixed = [m for group in itertools.zip_longest(*drawn) for m in group if m is not None]
    return (mutate.corpus() + mixed)[:n]


class ReplicaMemory:
    """Peak RSS of the Decoder replica (the process that decodes), sampled twice a second."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReplicaMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import harness

        while not self._stop.wait(0.5):
            try:
                actors = harness.replica_actors("Decoder")
            except Exception:
                continue  # Ray not up yet
            for actor in actors:
                try:
                    rss = psutil.Process(actor.pid).memory_info().rss / 2**20
                except (psutil.Error, TypeError):
                    continue
                self.peak_mb = max(self.peak_mb, rss)


def dead_replicas() -> int:
    import harness

    return sum(
        a.class_name.startswith("ServeReplica:") and a.state == "DEAD"
        for a in harness.list_ray_actors(alive_only=False)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1000, help="through the decode operator")
    parser.add_argument("--describe", type=int, default=60, help="of them through describe")
    parser.add_argument("--models", default="tiny", help="model set for describe")
    parser.add_argument("--budget-s", type=float, default=30.0)
    parser.add_argument("--describe-timeout-s", type=float, default=900.0)
    args = parser.parse_args()
    limit_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "inputs"
        folder.mkdir()
        seeds = mutate.write_seeds(Path(tmp) / "seeds")
        started = time.perf_counter()
        chosen = mutations(args.inputs)
        paths = [m.write(seeds, folder / f"in{k:04d}") for k, m in enumerate(chosen)]
        written_s = time.perf_counter() - started

        outcomes: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        with DecodeWorker(budget_s=args.budget_s) as worker:
            clean = [worker.decode(seed) for seed in list(seeds.values()) * 10]
            clean_s = sum(o.seconds for o in clean) / len(clean)
            mutated_s = 0.0
            peak_at = None
            for mutation, path in zip(chosen, paths, strict=True):
                before = worker.max_rss_mb
                outcome = worker.decode(path)
                if worker.max_rss_mb > before + 50:
                    peak_at = mutation
                outcomes[outcome.outcome] += 1
                kinds[type(mutation).__name__] += 1
                mutated_s += outcome.seconds
                if outcome.outcome in ("crash", "hang"):
                    print(f"{outcome.outcome}: {mutation!r}: {outcome.message}")
            hangs = worker.hangs
            decode_rss = worker.max_rss_mb
        per_input = mutated_s / len(paths)
        print(f"inputs: {len(paths)} written in {written_s:.1f}s: {dict(kinds)}")
        print(
            f"decode operator: {dict(outcomes)}; {per_input * 1000:.1f} ms per mutated input vs "
            f"{clean_s * 1000:.1f} ms per clean seed (ratio {per_input / clean_s:.2f}); "
            f"peak RSS {decode_rss:.0f} MB (last raised by {peak_at!r})"
        )

        crashes = outcomes["crash"]
        models = ModelsConfig(set=args.models, device="cpu", cache_dir=Path(tmp) / "models")
        config = Config(models=models, jobs=JobsConfig(max_duration_s=MAX_DURATION_S))
        with EndlessTs(mpegts_bytes(2.0, 64, 48, 10)) as endless:
            targets = [str(p) for p in paths[: args.describe]] + [endless.url]
            started = time.perf_counter()
            if_hung = (
                f"inputs={len(paths)} service_crashes={crashes} hangs={hangs + 1} "
                f"max_rss_mb={decode_rss:.0f}"
            )
            with ReplicaMemory() as memory:  # stopped before Ray is: it asks Ray's GCS
                report, problem = describe_all(
                    targets, Path(tmp) / "out", config, args.describe_timeout_s, if_hung
                )
                dead = dead_replicas() if report is not None else 0
            describe_s = time.perf_counter() - started
            driver.shutdown()
        if report is None:
            crashes += 1
            print(f"describe failed: {problem}")
        else:
            unclear = [
                error
                for error in report.failed.values()
                if "\n" in error or not any(error.startswith(t) for t in targets)
            ]
            failed = report.failed.values()
            endless_error = next((e for e in failed if e.startswith(endless.url)), "")
            ended = "max_duration_s" in endless_error
            crashes += len(unclear) + dead + (not ended)
            for error in unclear:
                print(f"unclear error: {error!r}")
            if not ended:
                print(f"the endless stream did not end at max_duration_s: {endless_error!r}")
            print(
                f"describe ({args.models} models): {len(targets)} inputs in {describe_s:.0f}s "
                f"(Ray start and model loading included): {len(report.done)} done, "
                f"{len(report.failed)} failed with one line, {dead} replicas died; "
                f"Decoder replica peak RSS {memory.peak_mb:.0f} MB"
            )
    print(
        f"of which through describe: {len(targets)} (the first {args.describe} and the endless one)"
    )
    rss = max(decode_rss, memory.peak_mb)
    print(
        f"inputs={len(paths)} service_crashes={crashes} hangs={hangs} max_rss_mb={rss:.0f}",
        flush=True,
    )


def describe_all(
    targets: list[str], out: Path, config: Config, timeout_s: float, summary: str
) -> tuple[driver.DescribeReport | None, str | None]:
    """``describe`` of every target: (report, None), or (None, the exception it raised).

    It runs in this thread (a Ray started from another one does not shut down cleanly); a
    watchdog ends the process after ``timeout_s`` printing ``summary`` (the last line, with
    this hang counted), so a hang is reported rather than waited for."""

    def hung() -> None:
        print(f"describe did not finish in {timeout_s:.0f}s", flush=True)
        print(summary, flush=True)
        os._exit(1)

    watchdog = threading.Timer(timeout_s, hung)
    watchdog.daemon = True
    watchdog.start()
    try:
        return driver.describe(targets, out, config, force=True), None
    except Exception as exc:  # a crash of the service, counted by the caller
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        watchdog.cancel()


if __name__ == "__main__":
    main()
