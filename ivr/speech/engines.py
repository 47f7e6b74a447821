"""The configured speech engine, by name (``IVR_SPEECH_ENGINE``, ``ivr replay --engine``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ivr.core.plan import NumberingPlan
    from ivr.speech.base import Recogniser

ENGINES = ("fusion", "templates", "whisper", "vosk")


def load_recogniser(engine: str, plan: "NumberingPlan") -> "Recogniser":
    """The engine, loaded and warmed up (raises with a reason when it cannot be)."""
    if engine == "fusion":
        from ivr.speech.fusion_engine import FusionEngine

        # every reference in memory before the first call: until then, calls use the DTMF menu
        return FusionEngine(plan).warm_up()
    if engine == "templates":
        from ivr.speech.template_engine import TemplateEngine

        # every reference in memory before the first call: until then, calls use the DTMF menu
        return TemplateEngine(plan, second_opinion=_whisper_or_none(plan)).warm_up()
    if engine == "whisper":
        from ivr.speech.whisper_engine import WhisperEngine

        return WhisperEngine(plan).warm_up()
    if engine == "vosk":
        from ivr.speech.grammar import grammar_for
        from ivr.speech.vosk_engine import VoskRecogniser

        recogniser = VoskRecogniser()
        # fail at start-up, with the list, rather than drop words silently on calls
        recogniser.verify_vocabulary(
            phrase for code, area in plan.area_codes.items() if area.shared for phrase in grammar_for(plan, code))
        return recogniser
    raise ValueError(f"unknown speech engine {engine!r}")


def _whisper_or_none(plan: "NumberingPlan"):
    """The Whisper engine as the template engine's second opinion, when it can be loaded."""
    from ivr.speech.base import RecogniserError

    try:
        from ivr.speech.whisper_engine import WhisperEngine

        return WhisperEngine(plan).warm_up()
    except (ImportError, RecogniserError) as exc:
        logging.getLogger(__name__).warning("no second opinion for the template engine: %s", exc)
        return None


def cache_references(engine: str, plan: "NumberingPlan") -> int:
    """Fill the engine's disk cache of spoken references (what ``scripts/install.sh`` runs);
    returns how many were made. Engines without references have nothing to cache."""
    if engine == "fusion":
        from ivr.speech.fusion_engine import FusionEngine

        return FusionEngine(plan).cache_references()
    if engine == "templates":
        from ivr.speech.template_engine import TemplateEngine

        return TemplateEngine(plan).cache_references()
    return 0
