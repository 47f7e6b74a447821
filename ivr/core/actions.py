"""What the call flow asks a driver to do: actions that say what they ask.

A driver never re-derives the meaning from prompt keys: :class:`AskName` carries the
candidates, :class:`ConfirmOne` the municipality, :class:`ChooseOfTwo` both options,
:class:`MenuPage` its digit -> municipality entries. The prompts are what to play.
Only the drive loop (:mod:`ivr.core.drive`) branches on these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import re

from ivr.core.routing import MORE_DIGIT, OPERATOR_DIGIT
from ivr.core.words import normalise

Prompt = tuple[str, ...]  # prompt keys, played in order (see ivr.core.prompts)


@dataclass(frozen=True, slots=True)
class Play:
    """Say something; nothing is asked."""

    prompts: Prompt


@dataclass(frozen=True, slots=True)
class AskName:
    """Which municipality? Listen for one of ``candidates`` (CBS codes); a digit asks for the menu."""

    prompts: Prompt  # played with barge-in (speech or digit stops them)
    candidates: tuple[str, ...]
    timeout_s: float
    again: bool = False  # asked again after an answer that was not understood
    digits: str = "0123456789"  # digits accepted as an answer as well
    phrases: tuple[str, ...] = ()  # words heard besides the names: a language offered ("English")
    by_voice: ClassVar[bool] = True

    @property
    def vocabulary_of(self) -> tuple[str, ...]:
        """CBS codes whose names are expected."""
        return self.candidates


@dataclass(frozen=True, slots=True)
class DecideAgain:
    """Decide the caller's last spoken answer again, among ``candidates`` (CBS codes; nothing
    is played, nothing new is heard): answered by SpeechHeard, or NoInput when the driver no
    longer has that answer. The national second pass asks it (see ivr.core.second_pass)."""

    candidates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConfirmOne:
    """Did you mean ``municipality``? Yes/no by voice, or 1 (yes) / 2 (no)."""

    prompts: Prompt
    municipality: str  # CBS code
    timeout_s: float
    digits: str = "12"
    by_voice: ClassVar[bool] = True

    @property
    def vocabulary_of(self) -> tuple[str, ...]:
        return ()  # a yes/no question


@dataclass(frozen=True, slots=True)
class ChooseOfTwo:
    """``options[0]`` or ``options[1]``? The name by voice, or digit 1 / 2."""

    prompts: Prompt
    options: tuple[str, str]  # CBS codes
    timeout_s: float
    digits: str = "12"
    by_voice: ClassVar[bool] = True
    # a place both options have ("Velp"): asked as "Velp in de gemeente A, of Velp in de gemeente B?"
    place: str = ""

    @property
    def vocabulary_of(self) -> tuple[str, ...]:
        return self.options


@dataclass(frozen=True, slots=True)
class SuggestOne:
    """Calling for ``municipality`` (again)? Yes/no by voice or 1 (yes) / 2 (no), or by voice
    the name of any of ``candidates`` instead. Asked before the name question when something
    is known about the caller (:mod:`ivr.core.suggestion`); never a silent transfer."""

    prompts: Prompt
    municipality: str  # CBS code suggested
    candidates: tuple[str, ...]  # the names heard besides yes/no (empty when answered by key only)
    timeout_s: float
    by_voice: bool = True  # False: the area code uses the DTMF menu, answered by key only
    digits: str = "12"
    phrases: tuple[str, ...] = ("ja", "nee")  # the yes/no words heard besides the names

    @property
    def vocabulary_of(self) -> tuple[str, ...]:
        return self.candidates


@dataclass(frozen=True, slots=True)
class MenuEntry:
    digit: str
    municipality: str  # CBS code
    heard_after: int  # prompts played up to and including this entry's digit


@dataclass(frozen=True, slots=True)
class MenuPage:
    """A DTMF menu page: ``entries`` (digit -> municipality), 9 for more when ``more``, 0 for a person."""

    prompts: Prompt  # played with barge-in: any digit stops them
    entries: tuple[MenuEntry, ...]
    more: bool
    timeout_s: float
    again: bool = False  # asked again after a failed answer
    area_code: bool = False  # no entries: the caller keys in an area code, one digit per page

    @property
    def digits(self) -> str:
        """The digits that mean something on this page."""
        if self.area_code:
            return "0123456789"
        return "".join(e.digit for e in self.entries) + (MORE_DIGIT if self.more else "") + OPERATOR_DIGIT


@dataclass(frozen=True, slots=True)
class Transfer:
    destination: str
    prompts: Prompt = ()  # said before dialling
    municipality: str | None = None
    back_digit: str = ""  # pressed during the prompts: "not that one", back to the question
    timeout_s: float | None = None  # how long the destination may ring (None: the driver's default)


@dataclass(frozen=True, slots=True)
class AskDigits:
    """Key in up to ``max_digits`` digits, ended by ``end_digit`` (or the last one): answered by DigitsEntered."""

    prompts: Prompt  # played with barge-in: the first digit stops them and counts
    max_digits: int
    timeout_s: float  # for the whole answer, from the end of the prompts
    end_digit: str = "#"


@dataclass(frozen=True, slots=True)
class RequestCallback:
    """Keep the caller's consented request to be called back (nothing is said)."""

    municipality: str  # CBS code
    number: str  # E.164


@dataclass(frozen=True, slots=True)
class Goodbye:
    """Say ``prompts`` (no barge-in) and hang up: the call is over."""

    prompts: Prompt = ()
    cause: str = "normal"


#: The questions answered by voice (or a digit): the driver listens.
Question = AskName | ConfirmOne | ChooseOfTwo | SuggestOne
Listen = Question  # the name drivers and tests knew
CollectDigit = MenuPage
Action = (Play | AskName | ConfirmOne | ChooseOfTwo | SuggestOne | MenuPage | Transfer | Goodbye | AskDigits
          | RequestCallback | DecideAgain)


# --- prompt keys (texts in ivr/core/prompts.py) -----------------------------------


BACK_DIGIT = "*"


def municipality_prompt(cbs_code: str) -> str:
    return f"gemeente/{cbs_code}"


def digit_prompts(number: str) -> Prompt:
    return tuple(f"cijfer/{d}" for d in number if d.isdigit())


_GEM_SUFFIX = re.compile(r"\s+gem\.?\s.*$", re.IGNORECASE)


def spoken_place(name: str) -> str:
    """A place as it is said: without the data's qualifiers ("Spaarndam gem. Haarlem", "Bergen (NH.)")."""
    return _GEM_SUFFIX.sub("", name.split(" (")[0]).strip()


def place_prompt(name: str) -> str:
    """The prompt key of a place name (rendered for names of more than one municipality)."""
    return "plaats/" + normalise(spoken_place(name)).replace(" ", "_")


def choose_place_prompts(place: str, first: str, second: str) -> Prompt:
    """"Bedoelt u Velp in de gemeente Rheden, of Velp in de gemeente Land van Cuijk?" about a place
    of two municipalities (CBS codes): the question names the place and each one's municipality,
    the only distinguishing word the data has for every pair."""
    said = place_prompt(place)
    return ("bedoelt_u_plaats", said, "in_de_gemeente", municipality_prompt(first), "of",
            said, "in_de_gemeente", municipality_prompt(second), "een_of_twee_gemeente")
