"""Helpers every floor may use: errors, credential redaction, backoff, locks, thread and memory
limits.
"""
