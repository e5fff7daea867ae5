"""Sinks deployment: runs every configured sink (``sinks:``) beside the service.

One replica holds one runner per sink; Serve replaces it when a runner's thread died (the
health check), and the replacement resumes each sink's consumer group where it stopped.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from mmlm_stream.config import Config
from mmlm_stream.sinks import open_runner


@serve.deployment(ray_actor_options={"num_cpus": 0.05}, health_check_period_s=5)
class Sinks:
    def __init__(self, config: Config, redis_url: str) -> None:
        self.runners = {name: open_runner(name, config, redis_url) for name in config.sinks}
        for runner in self.runners.values():
            runner.start()

    def check_health(self) -> None:
        dead = [name for name, runner in self.runners.items() if not runner.alive()]
        if dead:
            raise RuntimeError(f"sink threads stopped: {', '.join(dead)}")

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "delivered": runner.stats.delivered,
                "dead": runner.stats.dead,
                "retries": runner.stats.retries,
                "down": runner.stats.down_since is not None,
            }
            for name, runner in self.runners.items()
        }

    def __del__(self) -> None:
        for runner in getattr(self, "runners", {}).values():
            runner.stop(timeout_s=2.0)
