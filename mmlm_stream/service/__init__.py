"""The HTTP API, the backend it calls on a running Serve application, metrics and the dashboard."""
