"""Ray Serve deployments: resources, batching and routing around the operators; no logic.

Installed as ``mmlm_stream.deployments`` (package-dir mapping in pyproject.toml).
"""
