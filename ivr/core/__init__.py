"""The pure core: numbering plan, routing, call flow and its drive loop, call record, matcher, KPIs, prompts.

Imports only the standard library, numpy and rapidfuzz (enforced by import-linter, see pyproject.toml).
"""
