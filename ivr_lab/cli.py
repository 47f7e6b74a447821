"""The lab's commands, plugged into ``ivr`` through the ``ivr14.commands`` entry point.

``ivr corpus synth``, ``ivr replay``, ``ivr loadtest`` and ``ivr bench human`` are lab
tooling (espeak-ng corpora, SIPp, recorded speech): the runtime package never imports them.
"""

from __future__ import annotations

from ivr_lab import bench_human, corpus, loadtest, replay


def register(subparsers) -> None:
    for module in (corpus, replay, loadtest, bench_human):
        module.register(subparsers)
