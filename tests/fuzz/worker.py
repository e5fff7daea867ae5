"""Decodes inputs for the fuzz suite in a child process: one JSON line in, one out.

In: ``{"path": ..., "decode": {DecodeConfig fields}, "jobs": {JobsConfig fields}}``.
Out: ``{"outcome": "ok"|"error"|"crash", "message", "warnings", "items", "windows",
"seconds", "rss_mb", "max_rss_mb"}``. ``ok``: every item came out; ``error``: a
``SourceError`` (its one-line message); ``crash``: any other exception (type, message and
where), of the decode or of ``probe`` (which ``describe`` runs first). Every item also goes
through a ``Windower`` (stand-in encodings), so a timeline that would emit one window per
hop across a gap shows as a huge ``windows``.

A child process because a decode that hangs in FFmpeg cannot be stopped from Python
(``DecodeWorker`` kills and restarts it), and so peak RSS is the decoder's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.records.modality import Modality

EMB = np.zeros(2, np.float32)


def _memory_mb() -> tuple[float, float]:
    """(RSS now, peak RSS) of this process from ``/proc/self/status``. Not ``ru_maxrss``:
    Linux carries it over ``exec`` from the forked parent, so it would report the test
    process's size (GBs with models loaded) instead of the decoder's."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _where(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} ({frame.filename}:{frame.lineno})"


def _decode_one(request: Mapping[str, Any]) -> dict[str, Any]:
    from mmlm_stream.config.decode import DecodeConfig
    from mmlm_stream.config.jobs import JobsConfig
    from mmlm_stream.operators.decode import decode
    from mmlm_stream.operators.probe import probe
    from mmlm_stream.operators.window import Windower
    from mmlm_stream.records.channels import AudioChunk, DecodeWarning, Frame, SubtitleCue
    from mmlm_stream.records.results import AudioEncoding, FrameEncoding
    from mmlm_stream.util.errors import SourceError

    config = DecodeConfig.model_validate(request.get("decode", {}))
    limits = JobsConfig.model_validate(request.get("jobs", {}))
    started = time.perf_counter()
    result: dict[str, Any] = {"outcome": "ok", "message": None, "warnings": [], "items": 0}
    channels = [Modality.VISUAL, Modality.AUDIO, Modality.SUBTITLES]
    windower = Windower("fuzz", channels, 4.0, 2.0, max_gap_s=config.max_gap_s)
    windows = 0
    try:
        for item in decode(request["path"], config, limits=limits):
            result["items"] += 1
            if isinstance(item, DecodeWarning):
                result["warnings"].append(item.reason)
            elif isinstance(item, Frame):
                windower.add(Modality.VISUAL, FrameEncoding(item.time, EMB))
            elif isinstance(item, AudioChunk):
                windower.add(Modality.AUDIO, AudioEncoding(item.start, item.end, -20.0, -6.0))
            elif isinstance(item, SubtitleCue):
                windower.add(Modality.SUBTITLES, item)
            for channel in channels:
                windower.advance(channel, item.sort_time)
            windows += len(windower.ready())
        windows += len(windower.finish())
    except SourceError as exc:
        result["outcome"], result["message"] = "error", str(exc)
    except Exception as exc:
        result["outcome"], result["message"] = "crash", _where(exc)
    try:  # what ``describe`` asks of every input first: it must not raise anything else
        probe(request["path"], config)
    except SourceError:
        pass
    except Exception as exc:
        result["outcome"], result["message"] = "crash", f"probe: {_where(exc)}"
    result["windows"] = windows
    result["seconds"] = time.perf_counter() - started
    result["rss_mb"], result["max_rss_mb"] = _memory_mb()
    return result


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but results on the protocol stream
    for line in sys.stdin:
        if not line.strip():
            continue
        print(json.dumps(_decode_one(json.loads(line))), file=out, flush=True)


@dataclass
class Outcome:
    path: str
    outcome: str
    """ok, error, crash or hang."""
    message: str | None
    warnings: list[str]
    items: int
    windows: int
    seconds: float
    rss_mb: float
    max_rss_mb: float


class DecodeWorker:
    """The parent's side: ``decode(path)`` with a time budget; a hang kills the child."""

    def __init__(
        self,
        decode: Mapping[str, Any] | None = None,
        jobs: Mapping[str, Any] | None = None,
        budget_s: float = 30.0,
        log: Path | None = None,
    ) -> None:
        self.decode_config = dict(decode or {})
        self.jobs_config = dict(jobs or {})
        self.budget_s = budget_s
        self.log = log
        self.max_rss_mb = 0.0
        self.hangs = 0
        self.restarts = 0
        self._child: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(self.log or os.devnull, "a") as stderr:  # the child keeps its own copy
            return subprocess.Popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )

    def decode(self, path: Path) -> Outcome:
        if self._child is None or self._child.poll() is not None:
            if self._child is not None:
                self.restarts += 1
            self._child = self._start()
        child = self._child
        assert child.stdin is not None and child.stdout is not None
        request = {"path": str(path), "decode": self.decode_config, "jobs": self.jobs_config}
        child.stdin.write(json.dumps(request) + "\n")
        child.stdin.flush()
        ready, _, _ = select.select([child.stdout], [], [], self.budget_s)
        line = child.stdout.readline() if ready else ""
        if not line:
            self._child = None
            dead = child.poll()
            if dead is None:
                self.hangs += 1
                child.kill()
                child.wait()
                why, outcome = f"no answer in {self.budget_s:g}s", "hang"
            else:
                why, outcome = f"worker died (exit {dead})", "crash"
            return Outcome(str(path), outcome, why, [], 0, 0, self.budget_s, 0.0, 0.0)
        answer = json.loads(line)
        self.max_rss_mb = max(self.max_rss_mb, answer["max_rss_mb"])
        return Outcome(str(path), **answer)

    def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        with contextlib.suppress(OSError):
            child.stdin.close()  # type: ignore[union-attr]
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def __enter__(self) -> DecodeWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
