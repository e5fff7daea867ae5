"""mmlm-stream: distributed streaming video understanding on Ray Serve."""

__version__ = "0.1.0"
