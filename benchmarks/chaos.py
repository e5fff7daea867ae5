"""Chaos: how ``mmlm-stream serve`` with two live streams gets through real faults.

The same service and fault list as the chaos tests (``tests/chaos/harness.py``): a real
redis-server, two live MPEG-TS sources over TCP (``cam1``, ``cam2``), ``serve`` on a local
Ray with the tiny model set and 2 s windows (hop 2 s), fast backoff and timeouts (reconnect
0.02..0.04 s, call timeout 8 s, supervisor restarts 0.5..2 s, reconcile every 2 s). The
faults, in order: SIGKILL of the Decoder replica, of each encoder replica deployed
(TextEncoder first), of cam1's aggregator actor, of the Ingress replica, and of the Publisher
replica while it holds a backlog (``CLIENT PAUSE WRITE`` first, killed once each stream has 2
windows waiting);
redis-server stopped 60 s (restarted on the same port, without persistence); ``CLIENT PAUSE``
10 s; cam1's source gone 60 s (over 1,100 reconnect attempts, counted); the VisualEncoder
replica hung (SIGSTOP) 20 s; cam1 cut off every second for 15 s; a newer producer's event
type and an unreadable entry in the events stream (the audit group delivers the one and
dead-letters the other).

Per fault: recovered (both streams ``streaming`` and a new window from each within
``--recovery-s`` of the fault's end), seconds to recover, windows lost (missing hop slots
outside a reconnecting->streaming gap), duplicate windows, orphaned events (opened, never
closed, no one left to close them), the longest time from a window's wall-clock start to its
publication (``max_lag_s``: a stall that is caught up later loses nothing but shows here),
and the invariants that broke (``harness.check_invariants``).
A fault that left a stream broken is followed by a reset of that stream (DELETE, POST) before
the next one, so each fault is measured on its own.

Last line: ``faults_survived=N/M windows_lost=K duplicates=D recovery_p95_s=S`` (p95 over the
faults that recovered; a fault survived when it recovered and broke no invariant).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT / "tests", ROOT / "tests" / "chaos"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import harness  # noqa: E402

from mmlm_stream.util.threads import limit_threads  # noqa: E402


def _names(violations: list[str]) -> str:
    names = sorted({line.split(":", 1)[0] for line in violations})
    return ", ".join(names) if names else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recovery-s", type=float, default=60.0, help="longest wait for recovery per fault"
    )
    parser.add_argument(
        "--faults", nargs="+", metavar="NAME", help="run only these faults (see --list)"
    )
    parser.add_argument("--list", action="store_true", help="print the fault names and exit")
    parser.add_argument(
        "--config",
        default=None,
        help='JSON merged into the chaos config, e.g. \'{"decode": {"reconnect": {"max_s": 1}}}\'',
    )
    parser.add_argument("--verbose", action="store_true", help="print every broken invariant")
    args = parser.parse_args()

    if args.list:
        for fault in harness.standard_faults():
            print(f"{fault.name:28s} {fault.description}")
        return
    logging.basicConfig(level=logging.ERROR)
    limit_threads()
    override = json.loads(args.config) if args.config else None
    results: list[harness.FaultResult] = []
    started = time.monotonic()
    with harness.ChaosService(config=override) as service:
        print(f"service up in {time.monotonic() - started:.0f} s at {service.base_url}")
        faults = harness.standard_faults(harness.deployed_encoders())
        if args.faults:
            unknown = set(args.faults) - {f.name for f in faults}
            if unknown:
                parser.error(f"unknown faults: {', '.join(sorted(unknown))} (see --list)")
            faults = [f for f in faults if f.name in args.faults]
        header = (
            f"{'fault':26s} {'recovered':>9s} {'recover_s':>9s} {'lost':>5s} {'dups':>5s} "
            f"{'orphans':>7s} {'max_lag_s':>9s}  broken invariants"
        )
        print(header)
        print("-" * len(header))
        for fault in faults:
            result = harness.run_fault(service, fault, recovery_timeout_s=args.recovery_s)
            results.append(result)
            v = result.violations
            seconds = f"{result.recovery_s:.1f}" if result.recovery_s is not None else "-"
            print(
                f"{fault.name:26s} {'yes' if result.recovered else 'no':>9s} {seconds:>9s} "
                f"{v.windows_lost:>5d} {v.duplicates:>5d} {v.orphaned_events:>7d} "
                f"{v.max_lag_s:>9.1f}  {_names(v)}",
                flush=True,
            )
            if args.verbose:
                for line in [*v, *(f"note: {n}" for n in result.notes)]:
                    print(f"    {line}", flush=True)
    survived = sum(r.survived for r in results)
    lost = sum(r.violations.windows_lost for r in results)
    duplicates = sum(r.violations.duplicates for r in results)
    recoveries = [r.recovery_s for r in results if r.recovery_s is not None]
    p95 = harness.percentile(recoveries, 95)
    print(
        f"faults_survived={survived}/{len(results)} windows_lost={lost} "
        f"duplicates={duplicates} recovery_p95_s={p95:.1f}"
    )


if __name__ == "__main__":
    main()
