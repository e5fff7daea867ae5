"""Policies that stand between untrusted input and the machine: URLs, sealed secrets, Host
headers.
"""
