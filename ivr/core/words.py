"""How the project compares spoken words: normalised text, a rough Dutch phonetic key,
and the words around a name that are not the name (fillers, carrier phrases).

Pure, no I/O. Shared by the matcher, the yes/no reading, the engines' name locator and
the lab's benches, so every part compares words the same way.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["normalise", "phonetic", "FILLER_WORDS", "CARRIER_WORDS"]

_APOSTROPHE_ARTICLE = re.compile(r"(?:(?<=\s)|^)['’`´]\s?([st])(?:[\s\-]+|(?=[a-z]))")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _strip_diacritics(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalise(text: str) -> str:
    """Lower case, no diacritics, ``'s-``/``'t`` as plain words, punctuation to spaces.

    >>> normalise("'s-Hertogenbosch")
    's hertogenbosch'
    >>> normalise("Súdwest-Fryslân!")
    'sudwest fryslan'
    """
    text = _strip_diacritics(text).lower()
    text = _APOSTROPHE_ARTICLE.sub(lambda m: m.group(1) + " ", text)
    text = text.replace("'", "").replace("’", "")
    return " ".join(_NON_ALNUM.sub(" ", text).split())


_PHONETIC_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"sch$", "s"),  # Den Bosch, -bosch
        (r"ij|y|ei|ey", "E"),  # ij/y/ei sound alike
        (r"ae", "a"),  # Beekdaelen
        (r"ue", "u"),
        (r"ou|au|ouw|auw", "A"),
        (r"ui|uy", "U"),
        (r"oe", "O"),
        (r"ie", "i"),
        (r"eu", "Y"),
        (r"ph", "f"),
        (r"th", "t"),
        (r"ch", "g"),
        (r"ck", "k"),
        (r"c(?=[eiE])", "s"),
        (r"c", "k"),
        (r"q", "k"),
        (r"x", "ks"),
        (r"dt\b", "t"),
        (r"d\b", "t"),
        (r"v", "f"),
        (r"z", "s"),
        (r"h(?=[^aeiouAEOUY]|\b)", ""),  # silent h after a vowel / before a consonant
        (r"([a-zAEOUY])\1+", r"\1"),  # doubled letters
        (r"(?<=\w)en\b", "e"),  # final -en is often said as -e
    )
)


@lru_cache(maxsize=65536)
def phonetic(text: str) -> str:
    """A rough Dutch phonetic key of normalised ``text`` (words kept apart by spaces)."""
    out = text
    for pattern, repl in _PHONETIC_RULES:
        out = pattern.sub(repl, out)
    return out


# --- words that are not the name -----------------------------------------------------------

FILLER_WORDS = frozenset(
    "eh ehm eeh ehh euh uh uhm uhh um hm hmm hmmm mm mmm ah aah oh nou".split()
)
# Words that carry the request rather than the name. A window may not start or end on
# one of them unless this candidate set has a name starting/ending on it ("De Rijp").
CARRIER_WORDS = frozenset(
    """
    ik wil wilde zou graag willen de het een gemeente gemeentes gemeentehuis stadhuis
    bellen bel belt spreken verbinden doorverbinden verbonden worden word met naar
    alstublieft alsjeblieft alstublief aub astublieft svp please dank dankjewel dankuwel
    bedankt u je mij me mijn even hallo goedemorgen goedemiddag goedenavond dag hoi
    ja van voor in uit woon woonachtig wonen bij om te is dat die er heet plaats dorp
    stad kunt kun kan mag hebben heb nodig contact opnemen telefoon nummer ben en op
    aan the municipality of iemand iets weet niet hoe wat wie waar graag alleen even
    """.split()
)
