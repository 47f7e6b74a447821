"""The live speech path: a flow :data:`~ivr.core.flow.Question` carried out over AudioSocket.

The AGI session runs ``EXEC AudioSocket <uuid>,host:port``; meanwhile the
:class:`~ivr.adapters.asterisk.audiosocket.AudioSocketServer` plays the prompt itself (so our own
end-of-speech detector can stop it on barge-in), streams the caller's audio to the
recogniser and closes the socket when it has decided, which returns AudioSocket to the
AGI with the call still up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
import time
import uuid
import wave
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from ivr.core.flow import DecideAgain, Digit, Event, NoInput, Question, SpeechHeard
from ivr.speech.grammar import YES_NO_PHRASES
from ivr.core.matcher import ConfusableRule, Matcher
from ivr.core.plan import NumberingPlan
from ivr.speech.base import Recogniser
from ivr.speech.listening import hear_again
from ivr.adapters.asterisk.agi import AgiChannel, ChannelHungUp
from ivr.adapters.asterisk.audiosocket import AudioSocketServer

log = logging.getLogger(__name__)

class PromptAudio:
    """The prompts as raw slin (8 kHz, 16-bit mono), read once from the prompts folder."""

    def __init__(self, folder: Path):
        self.folder = folder

    @lru_cache(maxsize=1024)
    def pcm(self, key: str) -> bytes:
        path = self.folder / f"{key}.wav"
        try:
            with wave.open(str(path), "rb") as w:
                if (w.getframerate(), w.getsampwidth(), w.getnchannels()) != (8000, 2, 1):
                    log.warning("prompt %s is not 8 kHz 16-bit mono: skipped", path)
                    return b""
                return w.readframes(w.getnframes())
        except (OSError, wave.Error) as exc:
            log.warning("prompt %s unreadable (%s): skipped", path, exc)
            return b""

    def sentence(self, keys: Sequence[str]) -> bytes:
        return b"".join(self.pcm(k) for k in keys)


class AudioSocketSpeech:
    def __init__(self, server: AudioSocketServer, recogniser: Recogniser, prompts: PromptAudio,
                 plan: Callable[[], NumberingPlan], *, max_speech_s: float = 6.0):
        self.server = server
        self.recogniser = recogniser
        self.prompts = prompts
        self.plan = plan
        self.max_speech_s = max_speech_s
        # each call's last spoken answer, until it is decided again or pushed out by newer calls
        self._utterances: OrderedDict[str, bytes] = OrderedDict()
        # self-learning (ivr.adapters.learning), when collecting: each call's spoken answers (names, and
        # "ja"/"nee" to a confirmation) in order, until the call ends (``spoken``) or newer calls push them out
        self.keep_spoken = False
        self._spoken: OrderedDict[str, list[tuple[bytes, float | None, float | None]]] = OrderedDict()

    SPOKEN_PER_CALL = 8  # spoken answers kept per call: names 2-3 times, each maybe confirmed

    KEPT_UTTERANCES = 256  # at most ~6 s of slin each: a bound on memory, not a per-call limit

    def vocabulary(self, action: Question) -> tuple[str, ...]:
        # a language offered is heard by its name as well ("English")
        return self.vocabulary_of(action.vocabulary_of, getattr(action, "phrases", ()))

    def vocabulary_of(self, codes: tuple[str, ...], extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        """What the recogniser listens for: the municipalities ``codes`` (none: yes or no) and ``extra`` phrases."""
        closed_set = getattr(self.recogniser, "closed_set", False)  # scores the candidates themselves
        if not codes:
            return () if closed_set else YES_NO_PHRASES
        if closed_set:
            return codes + extra
        plan = self.plan()
        names = cached_matcher(tuple(plan.municipalities[c] for c in codes)).vocabulary()
        return tuple(sorted(set(names) | set(extra)))

    async def listen(self, channel: AgiChannel, call_id: str, action: Question) -> Event:
        call_uuid = str(uuid.uuid4())
        listening = asyncio.create_task(self.server.listen(
            call_uuid, self.recogniser, self.vocabulary(action),
            prompt_pcm=self.prompts.sentence(action.prompts) or None,
            no_input_s=action.timeout_s, max_speech_s=self.max_speech_s))
        try:
            await channel.command(f"EXEC AudioSocket {call_uuid},{self.server.host}:{self.server.port}")
        except BaseException:
            listening.cancel()
            raise
        result = await listening
        at = result.decided_at or time.monotonic()
        if result.outcome == "speech":
            self._keep(call_id, result.utterance)
            self._answered(call_id, result.utterance, result.recognition)
            return SpeechHeard(at, result.recognition, result.speech_ended_at, result.recogniser_ms)
        if result.outcome == "dtmf" and result.digits:
            return Digit(at, result.digits[0])
        if result.outcome == "hangup":
            raise ChannelHungUp("hang-up during AudioSocket")
        if result.outcome == "error":
            log.warning("speech path error on call %s: %s", call_id, result.detail)
        return NoInput(at)


    async def decide_again(self, call_id: str, action: DecideAgain) -> Event:
        """The call's last spoken answer, decided among ``action.candidates`` (in a worker
        thread: the engine may take a second); NoInput when it is no longer kept or the engine fails."""
        utterance = self._utterances.pop(call_id, b"")
        if not utterance:
            return NoInput(time.monotonic())
        started = time.monotonic()
        try:
            recognition = await asyncio.to_thread(hear_again, self.recogniser,
                                                self.vocabulary_of(action.candidates), utterance)
        except Exception:
            log.exception("call %s: deciding the answer again failed", call_id)
            return NoInput(time.monotonic())
        best = recognition.candidates[0].key if recognition.candidates else "-"
        log.info("call %s decided again among %d: verdict %s best %s p_right %s", call_id, len(action.candidates),
                 recognition.verdict or "-", best, "-" if recognition.p_right is None else f"{recognition.p_right:.4f}")
        return SpeechHeard(time.monotonic(), recognition, started, recognition.engine_ms)

    def _answered(self, call_id: str, utterance: bytes, recognition) -> None:
        """A spoken answer: logged with the engine's certainty (for a name, what the self-learning
        loop improves) and, when collecting, kept for the end of the call."""
        best = recognition.candidates[0].key if recognition is not None and recognition.candidates else ""
        if recognition is not None:
            log.info("call %s spoken answer: verdict %s best %s p_right %s margin %s", call_id,
                     recognition.verdict or "-", best or "-",
                     "-" if recognition.p_right is None else f"{recognition.p_right:.4f}",
                     "-" if recognition.margin is None else f"{recognition.margin:.3f}")
        if not self.keep_spoken:
            return
        kept = self._spoken.setdefault(call_id, [])
        if len(kept) < self.SPOKEN_PER_CALL:
            kept.append((utterance, recognition.p_right if recognition else None,
                         recognition.margin if recognition else None))
        while len(self._spoken) > self.KEPT_UTTERANCES:
            self._spoken.popitem(last=False)

    def spoken(self, call_id: str) -> list[tuple[bytes, float | None, float | None]]:
        """The call's kept spoken answers (slin, p_right, margin), in order, handed over once (the call ended)."""
        return self._spoken.pop(call_id, [])

    def _keep(self, call_id: str, utterance: bytes) -> None:
        self._utterances.pop(call_id, None)
        if utterance:
            self._utterances[call_id] = utterance
            while len(self._utterances) > self.KEPT_UTTERANCES:
                self._utterances.popitem(last=False)


@lru_cache(maxsize=512)
def cached_matcher(candidates: tuple, confusable: ConfusableRule | None = None) -> Matcher:
    """One matcher per candidate set: building one precomputes every name's keys."""
    return Matcher(candidates, confusable=confusable)


