"""Pure stream operators (decode, sample, resample, order, subtitles, probe); never import Ray.

Installed as ``mmlm_stream.operators`` (package-dir mapping in pyproject.toml), so the name
``operators`` never clashes with another distribution's top-level package.
"""
