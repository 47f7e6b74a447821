"""Step 2 of the Whisper engine: a short greedy transcript, biased with the candidates' names.

The transcript only says *where* the name sits (``ivr.speech.whisper_locate``); Whisper
scores the candidates there afterwards. Functions of the shared model and its tokenizer,
called by :class:`~ivr.speech.whisper_engine.WhisperEngine` on its worker threads.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ivr.speech.closed_set import Choice, spoken as _spoken
from ivr.speech.whisper_settings import EngineSettings

__all__ = ["start_tokens", "prompt_tokens", "biased_transcripts"]


def start_tokens(tok) -> list[int]:
    """<|startoftranscript|> <|nl|> <|transcribe|> <|notimestamps|>."""
    return [tok.sot, tok.language, tok.transcribe, tok.no_timestamps]


def prompt_tokens(tok, choices: Sequence[Choice], s: EngineSettings) -> list[int]:
    """The decoder prompt: the candidates' names as previous text (``bias="prompt"``), then the start."""
    start = start_tokens(tok)
    if s.bias != "prompt":
        return start
    names = ", ".join(_spoken(c.label) for c in choices if c.key not in ("ja", "nee"))
    if not names:
        return start
    return [tok.sot_prev] + tok.encode(" " + names + ".")[-200:] + start


def biased_transcripts(model, tok, encoded: np.ndarray, choices: Sequence[Sequence[Choice]],
                       n_mel: Sequence[int], todo: Sequence[int], s: EngineSettings) -> list[str]:
    """Short biased greedy transcripts of the utterances ``todo`` (others stay ""): only
    used to place the name and shortlist villages."""
    import ctranslate2

    out = [""] * len(choices)
    if not todo:
        return out
    prompts = {i: prompt_tokens(tok, choices[i], s) for i in todo}
    # a few tokens per second of speech is plenty; the rest would echo the prompt
    budget = min(s.max_new_tokens, s.base_tokens + int(max(n_mel[i] for i in todo) / 100 * s.tokens_per_second))
    # CTranslate2 needs <|startoftranscript|> at the same position in a batch: a
    # shorter previous text is lengthened by repeating its list of names in front
    longest = max(len(pr) for pr in prompts.values())
    for i, pr in prompts.items():
        if len(pr) < longest and pr[0] == tok.sot_prev:
            names = ", ".join(_spoken(c.label) for c in choices[i] if c.key not in ("ja", "nee"))
            cycle = tok.encode(" " + names + ",")
            prev = pr[1:-4]
            while len(prev) < longest - 5:
                prev = cycle + prev
            prompts[i] = [tok.sot_prev] + prev[-(longest - 5):] + pr[-4:]
    groups: dict[int, list[int]] = {}
    for i in todo:
        groups.setdefault(len(prompts[i]), []).append(i)
    for length, idx in groups.items():
        res = model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded[idx])),
            [prompts[i] for i in idx], beam_size=s.beam_size, max_length=length + budget,
            no_repeat_ngram_size=3, suppress_blank=True,
        )
        for i, r in zip(idx, res):
            out[i] = tok.decode([t for t in r.sequences_ids[0] if t < tok.eot]).strip()
    return out
