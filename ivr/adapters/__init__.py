"""Adapters beside the core: Asterisk (AGI, AMI, AudioSocket), the SQLite store, the HTTP API,
Prometheus metrics and the override files. They never import the service or the CLI.
"""
