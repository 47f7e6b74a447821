"""Per-area-code recogniser grammars (Vosk JSON phrase lists) generated from the plan.

``grammars/<area code>.json`` is a JSON list of phrases, ready for Vosk's
``KaldiRecognizer.SetGrammar``: every normalised name, alias, former municipality and
village of that code's candidates (what :class:`ivr.core.matcher.Matcher` knows), a few
carrier words, "ja"/"nee" and ``"[unk]"``. Written for every shared area code with

    ivr grammars build [--out DIR] [--all]

The same phrase list serves as the vocabulary handed to ``Recogniser.start`` (Whisper
uses it for biasing; Vosk restricts decoding to it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from ivr.core.matcher import Matcher, matcher_for

if TYPE_CHECKING:  # pragma: no cover
    from ivr.core.plan import NumberingPlan

DEFAULT_DIR = Path("grammars")
UNK = "[unk]"

# Words a caller wraps around the name; in the grammar so the decoder need not force
# them onto a name. Kept short: each must exist in the operator's model lexicon.
CARRIER_PHRASES: tuple[str, ...] = (
    "ik wil graag", "de gemeente", "gemeente", "bellen", "naar", "met", "alstublieft", "eh",
)
YES_NO_PHRASES: tuple[str, ...] = ("ja", "nee", "jazeker", "klopt", "neen", "niet")


def phrases_for(matcher: Matcher, *, extra: Iterable[str] = ()) -> list[str]:
    """The sorted, de-duplicated grammar phrases for one candidate set (``[unk]`` last)."""
    phrases = set(matcher.vocabulary()) | set(CARRIER_PHRASES) | set(YES_NO_PHRASES) | set(extra)
    phrases.discard("")
    return sorted(phrases) + [UNK]


def grammar_for(plan: "NumberingPlan", area_code: str) -> list[str]:
    return phrases_for(matcher_for(plan, area_code))


def grammar_words(phrases: Sequence[str]) -> list[str]:
    """The distinct words of a phrase list (without ``[unk]``), for lexicon checks."""
    return sorted({w for p in phrases if p != UNK for w in p.split()})


def write_grammars(plan: "NumberingPlan", out_dir: Path = DEFAULT_DIR, *, shared_only: bool = True) -> list[Path]:
    """Write ``<out_dir>/<code>.json`` for each (shared) area code; returns the paths.

    Deterministic output (sorted phrases, one per line) so regenerated files diff cleanly.
    Stale files of codes no longer in the plan are removed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for code in sorted(plan.area_codes):
        if shared_only and not plan.area_codes[code].shared:
            continue
        path = out_dir / f"{code}.json"
        text = "[\n" + ",\n".join(json.dumps(p, ensure_ascii=False) for p in grammar_for(plan, code)) + "\n]\n"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    keep = {p.name for p in written}
    for stale in out_dir.glob("0*.json"):
        if stale.name not in keep:
            stale.unlink()
    return written


def load_grammar(area_code: str, grammar_dir: Path = DEFAULT_DIR) -> list[str]:
    """A previously written grammar (a JSON list of phrases)."""
    phrases = json.loads((Path(grammar_dir) / f"{area_code}.json").read_text(encoding="utf-8"))
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        raise ValueError(f"{grammar_dir}/{area_code}.json is not a JSON list of phrases")
    return phrases
