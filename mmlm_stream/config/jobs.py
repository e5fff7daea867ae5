"""Section ``jobs``: the limits of batch jobs and their files."""

from __future__ import annotations

from pydantic import Field

from mmlm_stream.config.section import Section


class JobsConfig(Section):
    """Limits on each input of a batch job or ``describe`` (sources that are not live)."""

    max_duration_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="Media seconds an input may cover; one that reaches it (an endless HTTP "
        "stream, say) ends with an error naming the input.",
    )
    max_bytes: int = Field(
        64 * 1024**3,
        ge=1,
        description="Largest input: a local file's size, checked before it is opened, and "
        "for any input the bytes of media packets read.",
    )
