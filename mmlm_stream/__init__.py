"""mmlm-stream: distributed streaming video understanding on Ray Serve."""

from mmlm_stream.util import redaction as _redaction

__version__ = "0.1.0"

# Every process that loads the package (CLI, Serve replicas, actors) redacts credentials
# from each log record it makes, whoever logs it (contract §7).
_redaction.install()
