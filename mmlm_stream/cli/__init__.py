"""The ``mmlm-stream`` command: its parser, the Ray driver of ``describe``, ``watch`` and the
sample.
"""
