"""Turning the config into a Serve application and Kubernetes manifests."""
