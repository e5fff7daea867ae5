"""Section ``supervisor``: how the service restarts a live stream's analysis."""

from __future__ import annotations

from pydantic import Field

from mmlm_stream.config.section import Section


class SupervisorConfig(Section):
    """How the service brings live streams back after their analysis died."""

    restart_initial_s: float = Field(
        1.0, gt=0, description="First delay before restarting a stream's analysis."
    )
    restart_max_s: float = Field(
        30.0, gt=0, description="Longest delay between restarts of one stream."
    )
    failed_retry_s: float = Field(
        600.0,
        gt=0,
        description="A stream whose source is permanently invalid (401/404, no decodable "
        "stream) is tried again after this long.",
    )
    stable_s: float = Field(
        30.0,
        gt=0,
        description="An analysis that ran this long resets the restart backoff.",
    )
    reconcile_s: float = Field(
        5.0, gt=0, description="How often the registry in Redis is compared with what runs."
    )
