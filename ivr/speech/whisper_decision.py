"""The Whisper engine's decision (step 5): accept, confirm or choose, and the recognition it hands on.

Pure functions of the per-choice scores the engine computed and its settings: no model
calls here, so the decision rules can be read (and tested) on their own.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ivr.core.recognition import Recognition
from ivr.speech.closed_set import CBS as _CBS, Choice, decided
from ivr.speech.whisper_settings import EngineSettings

__all__ = ["decided_recognition", "decide", "is_decisive"]


def is_decisive(per_choice: np.ndarray, choices: Sequence[Choice], s: EngineSettings) -> bool:
    """The bare-phrase scores alone are decisive: a name leads by >= ``fast_margin`` nats."""
    if len(per_choice) < 2 or not any(_CBS.match(c.key) for c in choices):
        return False
    order = np.argsort(-per_choice, kind="stable")
    return (choices[int(order[0])].key not in ("ja", "nee")
            and float(per_choice[order[0]] - per_choice[order[1]]) >= s.fast_margin)


def decided_recognition(per_choice: np.ndarray, choices: Sequence[Choice], s: EngineSettings,
                        debug: dict | None = None, engine_ms: float = 0.0) -> Recognition:
    """The recognition handed to the call flow: the choices ranked by fused score (acoustic
    PMI + text_weight * matcher score of the transcript) and the engine's own verdict
    (:func:`decide`), which the matcher carries out as given:

    * ``accept``  - the transcript's best name and the acoustic best agree and the
      acoustic margin is >= ``accept_agree_margin``, or the acoustic margin alone is
      >= ``accept_margin``;
    * ``choose``  - fused margin < ``choose_margin`` without agreement ("A of B?");
    * ``confirm`` - everything else.

    Yes/no questions (only "ja"/"nee") get no verdict: the answer is read from the ranking.
    """
    order = np.argsort(-per_choice, kind="stable")
    names = [int(i) for i in order if choices[int(i)].key not in ("ja", "nee")]
    decision = None
    if debug is not None and len(names) >= 2 and choices[int(order[0])].key not in ("ja", "nee"):
        decision = debug.get("force") or decide(per_choice, debug, s)
        debug["decision"] = decision
    return decided(per_choice, choices, decision, s.temperature, engine_ms)


def decide(per_choice: np.ndarray, debug: dict, s: EngineSettings) -> str:
    """accept / choose / confirm from the fused, acoustic (``debug["acoustic"]``) and
    transcript (``debug["text"]``) scores per choice."""
    ac = np.asarray(debug["acoustic"], float)
    tx = np.asarray(debug["text"], float)
    best = int(np.argmax(per_choice))
    oa = [int(i) for i in np.argsort(-ac, kind="stable")]
    ac_margin = float(ac[oa[0]] - ac[oa[1]]) if len(ac) > 1 else float("inf")
    agree = bool(tx.max() >= s.agree_text and int(np.argmax(tx)) == int(oa[0]) == best)
    if int(oa[0]) == best and (ac_margin >= s.accept_margin or (agree and ac_margin >= s.accept_agree_margin)):
        return "accept"
    fused = np.sort(per_choice)[::-1]
    if not agree and fused[0] - fused[1] < s.choose_margin:
        return "choose"
    return "confirm"
