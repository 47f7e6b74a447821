"""Did the caller say yes or no? Read from a recogniser's n-best.

Pure, no I/O; words compared as :mod:`ivr.core.words` normalises them.
"""

from __future__ import annotations

import re
from typing import Sequence

from ivr.core.words import FILLER_WORDS, normalise

__all__ = ["yes_no", "YES_WORDS", "NO_WORDS"]

YES_WORDS = frozenset(
    """
    ja jawel jazeker jaja jah jaa yes yep jep jup ok oke okay okee correct klopt
    inderdaad precies zeker juist prima goed akkoord graag doe prima absoluut
    """.split()
)
NO_WORDS = frozenset(
    """nee neen neh nope no niet fout verkeerd onjuist geen nooit neeje nein""".split()
)
_NEGATORS = frozenset({"niet", "geen"})


def _collapse(word: str) -> str:
    return re.sub(r"(.)\1+", r"\1", word)


_YES_KEYS = frozenset(_collapse(w) for w in YES_WORDS)
_NO_KEYS = frozenset(_collapse(w) for w in NO_WORDS)


def _yes_no_one(text: str) -> bool | None:
    words = [_collapse(w) for w in normalise(text).split() if w not in FILLER_WORDS]
    if not words:
        return None
    yes = any(w in _YES_KEYS for w in words)
    no = any(w in _NO_KEYS for w in words)
    if yes and any(w in _NEGATORS for w in words):
        # "klopt niet", "niet goed", "dat is het niet" -> no
        return False
    if yes and no:
        # "nee ja", "ja nee": a caller changing their mind; trust the last word said
        for w in reversed(words):
            if w in _YES_KEYS:
                return True
            if w in _NO_KEYS:
                return False
    if yes:
        return True
    if no:
        return False
    return None


def yes_no(nbest: Sequence[tuple[str, float]]) -> bool | None:
    """Did the caller say yes (True), no (False), or is it unclear (None)?

    The highest-ranked hypothesis with a clear answer decides, unless a hypothesis
    nearly as confident says the opposite.
    """
    answer: bool | None = None
    answer_conf = 0.0
    for text, conf in nbest:
        verdict = _yes_no_one(text)
        if verdict is None:
            continue
        if answer is None:
            answer, answer_conf = verdict, max(float(conf), 1e-6)
        elif verdict != answer and float(conf) >= 0.8 * answer_conf:
            return None
    return answer
