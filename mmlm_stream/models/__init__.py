"""Model registry, loaders and encoders (one module per model; see registry.py)."""
