"""Which spoken answers of a finished call are labelled examples of a municipality's name (issue 12).

Pure: a final :class:`~ivr.core.callrecord.CallRecord` in, labels out. A label points at a
spoken answer to "which municipality?" by its ordinal among *all* the call's spoken answers
(every listen that heard speech gives one attempt with input ``speech``: kind ``speech``,
``confirm`` or ``suggest``; the national second pass decides a kept answer again and listens
to nothing),
which is the order in which the speech path keeps the call's utterances; the collector
pairs the two.

An answer is labelled with municipality X only when the caller said so themselves:

* the next attempt (after the national second pass, if one ran) is the confirmation and the
  caller answered it "ja" (voice or 1), or chose X in "A of B?" (voice or digit);
* or the answer was not recognised and the caller then picked X in the DTMF menu (menu
  pages turned with "more" in between), with no further spoken answer in between.

Nothing of the call is labelled when it shows a misroute signal: the caller pressed * while
hearing where the call went (a ``transfer``/``back`` attempt), or rejected a confirmation
(an answer whose confirmation was "nee" is never labelled, and neither is any other answer
of that call), or the call did not end routed (or told "not connected") to X itself, or a
driver's ground truth (``expected_municipality``, ``answered_by``) disagrees.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.core.callrecord import AttemptKind, AttemptVerdict, CallRecord, InputKind, Outcome

__all__ = ["Label", "labels"]

# every attempt that is one heard answer, as the speech path keeps them in order: a name (or a
# language's name), "ja"/"nee" to a confirmation, and "ja"/"nee" to a suggestion asked first
_LISTENED = (AttemptKind.SPEECH, AttemptKind.CONFIRM, AttemptKind.SUGGEST)
_CONFIRMED = (AttemptVerdict.YES, AttemptVerdict.CHOSEN, AttemptVerdict.ACCEPT)
_ASKED_BACK = (AttemptVerdict.CONFIRM, AttemptVerdict.CHOOSE)
_NOT_HEARD = (AttemptVerdict.REJECT, AttemptVerdict.UNCLEAR)


@dataclass(frozen=True)
class Label:
    spoken: int  # ordinal of the answer among the call's spoken answers (``speech`` and ``confirm`` attempts)
    cbs_code: str
    phrase: str  # what the record says was heard for it (the engine's name of the best candidate)
    how: str  # confirmed | chosen | menu


def labels(record: CallRecord) -> list[Label]:
    """The labelled spoken answers of a finished call (see the module's rule)."""
    if record.outcome not in (Outcome.ROUTED, Outcome.NOT_CONNECTED) or not record.municipality:
        return []
    if record.rejected_confirmations:
        return []
    if any(a.kind is AttemptKind.TRANSFER and a.verdict is AttemptVerdict.BACK for a in record.attempts):
        return []
    final = record.municipality
    if record.expected_municipality and record.expected_municipality != final:
        return []
    if record.answered_by and record.answered_by != final:
        return []
    out: list[Label] = []
    attempts = record.attempts
    spoken = -1
    for i, a in enumerate(attempts):
        if a.input is not InputKind.SPEECH or a.kind not in _LISTENED:
            continue
        spoken += 1
        if a.kind is not AttemptKind.SPEECH:
            continue
        j = i + 1
        while j < len(attempts) and attempts[j].kind is AttemptKind.NATIONAL:
            j += 1
        nxt = attempts[j] if j < len(attempts) else None
        if nxt is None:
            continue
        if (a.verdict in _ASKED_BACK or attempts[j - 1].kind is AttemptKind.NATIONAL) \
                and nxt.kind is AttemptKind.CONFIRM and nxt.verdict in _CONFIRMED and nxt.chosen == final:
            how = "confirmed" if nxt.verdict is AttemptVerdict.YES else "chosen"
            out.append(Label(spoken, final, a.heard if a.chosen == final else "", how))
        elif a.verdict in _NOT_HEARD and nxt.kind is AttemptKind.MENU:
            k = j
            while k < len(attempts) and attempts[k].kind is AttemptKind.MENU \
                    and attempts[k].verdict is AttemptVerdict.MORE:
                k += 1
            pick = attempts[k] if k < len(attempts) else None
            if pick is not None and pick.kind is AttemptKind.MENU and pick.verdict is AttemptVerdict.CHOSEN \
                    and pick.chosen == final:
                out.append(Label(spoken, final, "", "menu"))
    return out
