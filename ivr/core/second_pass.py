"""The national second pass: a caller on a shared area code who names a municipality outside it.

In 2020 a caller on 14 023 who said "Haarlemmermeer" was matched to the nearest name of
the dialled code and sent to Haarlem. Now, when the dialled code's decision is not sure
(confirm, choose or nothing recognised), the flow has the same answer decided again among
every municipality of the plan, and this module says what that second decision changes:

* a municipality outside the dialled code, decided with confidence: it is proposed, always
  by a question ("Utrecht valt niet onder 14 020. Ik verbind u door met de gemeente
  Utrecht, klopt dat?"); never a transfer without one;
* two municipalities outside the code that the caller's words fit through one and the same
  phrase (a place name both have, "Velp"): "A of B?" between them;
* anything else (a municipality of the dialled code is the best nationally too, the
  national decision is unsure, or it heard nothing): the dialled code's own decision
  stands, so the in-code decision is never changed by names it does not hold.

Confident means the national decision's own ``accept``: among thousands of names and places
a loose match is found for almost anything ("een afspraak maken" fits some village at 84 of
100), so a national ``confirm`` is not enough to bother the caller with, even after nothing
was recognised among the code's names; nor is a national ``choose`` between two names that
merely sound alike. A phrase two municipalities share ("Velp") is itself decided by the ear,
so their ``choose`` is proposed only when the engine was as sure of the phrase as an accept
needs (its calibrated ``p_right``, where it has one): an American "Goes" on 14 0113 fits the
hamlet "Schouw" of De Fryske Marren and Gemert-Bakel at p 0.97 nationally (live), below the 0.995 an
accept needs, and must leave the code's own "Bedoelt u Goes?" standing. On the human bench's dev split (``ivr bench human --second-pass``, 60
clips each asked on their own code and on one without their phrase) every one of 7 in-code
clips sent elsewhere was sent by such a ``choose``, and 10 of 10 national ``accept`` s of a
clip asked on the wrong code named the right municipality. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection

from ivr.core.matcher import MatchResult, MatchVerdict, Scored

__all__ = ["worth_a_second_pass", "outside_the_code", "SURE_P"]

# the fusion engine's accept threshold (FusionSettings.accept_p; a test ties the two): how sure of a
# shared phrase the engine must be before two municipalities outside the code are put to the caller
SURE_P = 0.995


def worth_a_second_pass(first: MatchResult) -> bool:
    """Whether the dialled code's decision leaves room for a name from outside it."""
    return first.verdict is not MatchVerdict.ACCEPT


def outside_the_code(national: MatchResult, in_code: Collection[str], p_right: float | None = None
                     ) -> tuple[Scored, ...]:
    """What to propose outside the dialled code: one municipality to confirm, two to choose
    between, or () when the dialled code's own decision stands. ``national``: the answer
    decided among every municipality; ``in_code``: the CBS codes of the dialled code's;
    ``p_right``: the engine's certainty of its national best (None: the engine has none)."""
    best = national.best
    if best is None or national.verdict is MatchVerdict.REJECT or best.cbs_code in in_code:
        return ()
    if national.verdict is MatchVerdict.CHOOSE:
        two = national.ranked[:2]
        same_phrase = len(two) == 2 and bool(two[0].heard) and two[0].heard == two[1].heard
        sure = p_right is None or p_right >= SURE_P
        return two if sure and same_phrase and all(s.cbs_code not in in_code for s in two) else ()
    # an accept the confusable-pair rule held to a confirmation is as confident: it is proposed by a
    # question anyway, as every outside municipality is
    return (best,) if national.verdict is MatchVerdict.ACCEPT or national.held_by else ()
