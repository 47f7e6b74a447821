"""Where the name sits in a Whisper transcript, and which villages are worth scoring there.

Step 3 of the Whisper engine (``ivr.speech.whisper_engine``): the project's matcher reads
the transcript's first sentence; its best span is where the name sits. The engine then
puts every candidate phrase in that place and lets Whisper score it.
"""

from __future__ import annotations

import re

from rapidfuzz import fuzz, process

from ivr.core.words import FILLER_WORDS, normalise, phonetic
from ivr.speech.closed_set import municipality_choice, spoken as _spoken
from ivr.speech.whisper_settings import EngineSettings

__all__ = ["locate_name"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def locate_name(transcript: str, matcher, s: EngineSettings):
    """Where the name sits in the first sentence of ``transcript``, per the matcher.

    Returns ``(prefix, suffix, shortlist)``: the words before the matched span (as
    transcribed), the trailing punctuation/words after it up to the sentence end,
    and per CBS code the villages worth scoring (the sound-alikes of the span among
    the villages of the matcher's best candidates). ``None`` when nothing usable.
    """
    clause = _SENTENCE_END.split(transcript.strip(), maxsplit=1)[0]
    if not clause:
        return None
    result = matcher.match([(clause, 1.0)])
    if not result.ranked or result.ranked[0].score < s.locate_floor:
        return None
    span = result.ranked[0].span.split()
    tokens = clause.split()
    flat: list[tuple[str, int]] = []  # normalised word, index of the transcript token
    for ti, t in enumerate(tokens):
        flat += [(w, ti) for w in normalise(t).split() if w not in FILLER_WORDS]
    words = [w for w, _ in flat]
    pos = next((i for i in range(len(words) - len(span) + 1) if words[i:i + len(span)] == span), None)
    if pos is None or not span:
        return None
    a, b = flat[pos][1], flat[pos + len(span) - 1][1]
    prefix = " ".join(tokens[:a])
    tail = re.sub(r"^.*?([^\w]*)$", r"\1", tokens[b])
    rest = " ".join(tokens[b + 1:])
    suffix = (tail if s.score_punct else "") + ((" " + rest) if rest and s.keep_suffix else "")
    # villages: the span's sound-alikes among the villages of the best candidates
    shortlist: dict[str, list[str]] = {}
    key = phonetic(" ".join(span)).replace(" ", "")
    pool: list[tuple[str, str]] = []
    for sc in result.ranked[: s.village_candidates]:
        m = matcher.candidates[[c.cbs_code for c in matcher.candidates].index(sc.cbs_code)]
        names = {normalise(x) for x in (m.name, *m.aliases, *m.former_names)}
        pool += [(sc.cbs_code, p) for p in municipality_choice(m).places if normalise(p) not in names]
    if pool:
        keys = [phonetic(normalise(p)).replace(" ", "") for _, p in pool]
        sims = process.extract(key, keys, scorer=fuzz.ratio, limit=s.max_places)
        for _, score, k in sims:
            if score >= s.place_floor:
                code, place = pool[k]
                shortlist.setdefault(code, []).append(place)
    heard = result.ranked[0]
    if normalise(heard.heard) not in {normalise(x) for x in shortlist.get(heard.cbs_code, [])}:
        m = matcher.candidates[[c.cbs_code for c in matcher.candidates].index(heard.cbs_code)]
        spoken = {normalise(x) for x in (m.name, *m.aliases, *m.former_names)}
        if normalise(heard.heard) in {normalise(p) for p in m.places} - spoken:
            shortlist.setdefault(heard.cbs_code, []).append(_spoken(heard.heard))
    return prefix, suffix, shortlist, result
