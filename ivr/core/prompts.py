"""Every sentence the caller hears, in one place, per language.

Keys are file stems: Asterisk plays ``ivr14/<key>``; the speech path plays the same WAV
files itself. Operators replace any of them with a recording of the same name.
Calls compose sentences from pieces (``voor`` + ``gemeente/GM0664`` + ``toets`` +
``cijfer/1``) so a menu always lists exactly the area code's municipalities.

Dutch is the default language: its files sit at the top of the prompt folder. Every other
language has one folder of its own, named by its code (``en/welkom`` is the English
``welkom``), rendered with that language's espeak-ng voice at install. The flow composes
its prompts in Dutch keys and :func:`localised` moves them into the caller's language;
municipality and place names (``gemeente/…``, ``plaats/…``) are proper names and keep their
Dutch recording. Place names are rendered only for places of more than one municipality
(:func:`shared_places`): they are said only when the caller is asked which of two is meant.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.core.actions import place_prompt, spoken_place
from ivr.core.plan import NumberingPlan

PHRASES: dict[str, str] = {
    "welkom": "Welkom bij het veertien-plus-nummer van de gemeente.",
    "zeg_gemeente": "Zegt u de naam van de gemeente die u wilt bellen. Of toets een cijfer voor het keuzemenu.",
    "niet_verstaan": "Sorry, dat heb ik niet goed verstaan.",
    "kies_menu": "Kiest u uit de volgende gemeenten.",
    "voor": "Voor",
    "toets": "toets",
    "meer_keuzes": "Voor meer gemeenten, toets 9.",
    "medewerker_keuze": "Voor een medewerker, toets 0.",
    "ongeldige_keuze": "Dat is geen geldige keuze.",
    "geen_invoer": "Ik heb geen keuze gehoord.",
    "doorverbinden": "U wordt doorverbonden met de gemeente",
    "terug_keuze": "Klopt dat niet? Toets dan sterretje.",
    "bedoelt_u": "Bedoelt u de gemeente",
    "ja_nee": "Zegt u ja of nee. Of toets 1 voor ja, en 2 voor nee.",
    "of": "of",
    "een_of_twee": "Zegt u de naam. Of toets 1 voor de eerste, en 2 voor de tweede.",
    # a place of two municipalities: "Bedoelt u Velp in de gemeente Rheden, of Velp in de gemeente ...?"
    "bedoelt_u_plaats": "Bedoelt u",
    "in_de_gemeente": "in de gemeente",
    "een_of_twee_gemeente": "Zegt u de naam van de gemeente. Of toets 1 voor de eerste, en 2 voor de tweede.",
    "de_gemeente": "De gemeente",
    "niet_aangesloten": "is niet bereikbaar via het veertien-plus-nummer.",
    "belt_u": "U kunt de gemeente bellen op nummer",
    "tot_ziens": "Tot ziens.",
    "onbekend_nummer": "Dit veertien-plus-nummer bestaat niet. Controleer het netnummer en belt u opnieuw.",
    "medewerker": "U wordt doorverbonden met een medewerker.",
    "niet_bereikbaar": "De gemeente is op dit moment niet bereikbaar. Probeert u het later opnieuw.",
    "overloop": "De gemeente is nu niet bereikbaar. U wordt doorverbonden met een ander nummer.",
    "niet_bereikbaar_nu": "De gemeente is op dit moment niet bereikbaar.",
    "terugbellen_vraag": "Druk 1 als wij u mogen terugbellen. Uw nummer wordt alleen daarvoor bewaard.",
    "terugbellen_nummer": "Toets het nummer waarop wij u kunnen terugbellen, gevolgd door een hekje.",
    "ongeldig_nummer": "Dat is geen geldig Nederlands of internationaal nummer.",
    "terugbellen_bevestigd": "Dank u. De gemeente belt u terug op nummer",
    "later_opnieuw": "Probeert u het later opnieuw.",
    "calamiteit": "Door bijzondere omstandigheden wordt uw gesprek omgeleid.",
    "storing": "Er is een storing. U wordt doorverbonden met een medewerker.",
    "lab/verbonden": "U bent verbonden met de gemeente.",
}

# The national second pass: a name outside the dialled area code ("Utrecht valt niet onder 14 020.")
PHRASES.update({
    "valt_niet_onder": "valt niet onder veertien",
    "verbinden_met": "Ik verbind u door met de gemeente",
    "klopt_dat": "Klopt dat? Zegt u ja of nee. Of toets 1 voor ja, en 2 voor nee.",
})

# The suggestion asked before the name question (issue 11, item 3)
PHRASES.update({
    "suggestie_weer": "Belt u weer voor de gemeente",
    "suggestie_vast": "Belt u voor de gemeente",
    "suggestie_antwoord": "Zeg ja, of noem de gemeente. Of toets 1 voor ja, en 2 voor nee.",
    "suggestie_toets": "Toets 1 voor ja, en 2 voor nee.",
})

# Sentences of the access numbers (a call from abroad: no area code dialled)
PHRASES.update({
    "welke_gemeente": "Welke gemeente wilt u bellen? Zegt u de naam van de gemeente. Of toets het netnummer.",
    "toets_netnummer": "Toetst u het netnummer van de gemeente, bijvoorbeeld nul een een drie.",
    "onbekend_netnummer": "Dat netnummer ken ik niet.",
})

#: English: the same keys, said in English (rendered with espeak-ng ``en-gb``).
PHRASES_EN: dict[str, str] = {
    "welkom": "Welcome to the fourteen plus number of the Dutch municipalities.",
    "zeg_gemeente": "Please say the name of the municipality you want to call. Or press a key for the menu.",
    "niet_verstaan": "Sorry, I did not understand that.",
    "kies_menu": "Please choose from the following municipalities.",
    "voor": "For",
    "toets": "press",
    "meer_keuzes": "For more municipalities, press 9.",
    "medewerker_keuze": "To speak to someone, press 0.",
    "ongeldige_keuze": "That is not a valid choice.",
    "geen_invoer": "I did not hear a choice.",
    "doorverbinden": "You are being put through to the municipality of",
    "terug_keuze": "Not right? Then press star.",
    "bedoelt_u": "Do you mean the municipality of",
    "ja_nee": "Please say yes or no. Or press 1 for yes, and 2 for no.",
    "of": "or",
    "een_of_twee": "Please say the name. Or press 1 for the first, and 2 for the second.",
    "bedoelt_u_plaats": "Do you mean",
    "in_de_gemeente": "in the municipality of",
    "een_of_twee_gemeente": "Please say the name of the municipality. Or press 1 for the first, and 2 for the second.",
    "de_gemeente": "The municipality of",
    "niet_aangesloten": "cannot be reached through the fourteen plus number.",
    "belt_u": "You can call the municipality on",
    "tot_ziens": "Goodbye.",
    "onbekend_nummer": "This fourteen plus number does not exist. Please check the area code and call again.",
    "medewerker": "You are being put through to a member of staff.",
    "niet_bereikbaar": "The municipality cannot be reached at the moment. Please try again later.",
    "overloop": "The municipality cannot be reached now. You are being put through to another number.",
    "niet_bereikbaar_nu": "The municipality cannot be reached at the moment.",
    "terugbellen_vraag": "Press 1 if we may call you back. Your number is kept for that purpose only.",
    "terugbellen_nummer": "Please key in the number on which we can call you back, followed by the hash key.",
    "ongeldig_nummer": "That is not a valid Dutch or international number.",
    "terugbellen_bevestigd": "Thank you. The municipality will call you back on",
    "later_opnieuw": "Please try again later.",
    "calamiteit": "Due to special circumstances, your call is being redirected.",
    "storing": "There is a fault. You are being put through to a member of staff.",
    "welke_gemeente": "Which municipality would you like to call? Please say its name. Or key in its area code.",
    "toets_netnummer": "Please key in the area code of the municipality, for example zero one one three.",
    "onbekend_netnummer": "I do not know that area code.",
    "valt_niet_onder": "is not part of fourteen",
    "verbinden_met": "I will put you through to the municipality of",
    "klopt_dat": "Is that right? Please say yes or no. Or press 1 for yes, and 2 for no.",
    "suggestie_weer": "Are you calling the municipality of",
    "suggestie_vast": "Are you calling the municipality of",
    "suggestie_antwoord": "Say yes, or say the name of the municipality. Or press 1 for yes, and 2 for no.",
    "suggestie_toets": "Press 1 for yes, and 2 for no.",
    # said in the Dutch dialogue, in English, so an English speaker understands it
    "kies_engels": "For English, press 9.",
}


@dataclass(frozen=True)
class Language:
    """A language the dialogue can be held in."""

    code: str  # the prompt folder's name (ISO 639-1)
    voice: str  # the espeak-ng voice that renders its prompts at install (never MBROLA)
    phrases: dict[str, str]
    digit_words: tuple[str, ...]
    offer: str = ""  # prompt key offering this language in the Dutch greeting
    offer_digit: str = ""  # the digit that chooses it there
    said_as: tuple[str, ...] = ()  # what a caller says to choose it (normalised, lower case)


DEFAULT_LANGUAGE = "nl"

_SPOKEN_SUFFIXES = {"(NH)": "in Noord-Holland", "(L)": "in Limburg"}


def spoken_name(name: str) -> str:
    """How a municipality's name is said: "Bergen (NH)" -> "Bergen in Noord-Holland"."""
    for suffix, spoken in _SPOKEN_SUFFIXES.items():
        if name.endswith(suffix):
            return f"{name[: -len(suffix)].strip()} {spoken}"
    return name


DIGIT_WORDS = ["nul", "een", "twee", "drie", "vier", "vijf", "zes", "zeven", "acht", "negen"]

LANGUAGES: dict[str, Language] = {
    "nl": Language("nl", "nl", PHRASES, tuple(DIGIT_WORDS)),
    "en": Language("en", "en-gb", PHRASES_EN,
                   ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
                   offer="en/kies_engels", offer_digit="9", said_as=("english", "engels", "in english")),
}


def localised(keys: tuple[str, ...], language: str) -> tuple[str, ...]:
    """``keys`` (Dutch) as the prompts of ``language``: the same stems in its folder; names
    and keys already in a language's folder stay as they are."""
    if language == DEFAULT_LANGUAGE:
        return keys
    prefix = language + "/"
    return tuple(k if k.startswith(_PROPER_NAMES) or k.split("/", 1)[0] in LANGUAGES else prefix + k for k in keys)


_PROPER_NAMES = ("gemeente/", "plaats/")


def language_said(text: str) -> str | None:
    """The language a caller asked for by name ("English"), or None."""
    said = " ".join(text.lower().replace(",", " ").replace(".", " ").split())
    for lang in LANGUAGES.values():
        if said in lang.said_as:
            return lang.code
    return None


def all_prompt_texts(plan: NumberingPlan) -> dict[str, str]:
    """Every prompt key with its text: fixed phrases, digits, municipality names (Dutch at
    the top, every other language's phrases and digits under its folder)."""
    texts = dict(PHRASES)
    texts.update({f"cijfer/{d}": word for d, word in enumerate(DIGIT_WORDS)})
    texts.update({f"gemeente/{m.cbs_code}": spoken_name(m.name) for m in plan.municipalities.values()})
    texts.update(shared_places(plan))
    for lang in LANGUAGES.values():
        if lang.code != DEFAULT_LANGUAGE:
            texts.update({f"{lang.code}/{k}": v for k, v in lang.phrases.items()})
            texts.update({f"{lang.code}/cijfer/{d}": w for d, w in enumerate(lang.digit_words)})
    return texts


_SHARED: dict[str, dict[str, str]] = {}


def shared_places(plan: NumberingPlan) -> dict[str, str]:
    """Prompt key -> spoken text of every place name that more than one municipality has (the two
    Velps, "Heikant" ...): the names a "which of two?" question may say. Cached per plan version."""
    cached = _SHARED.get(plan.version)
    if cached is None:
        owners: dict[str, set[str]] = {}
        spoken: dict[str, str] = {}
        for m in plan.municipalities.values():
            for p in m.places:
                key = place_prompt(p)
                if key != "plaats/":
                    owners.setdefault(key, set()).add(m.cbs_code)
                    spoken.setdefault(key, spoken_place(p))
        if len(_SHARED) > 16:
            _SHARED.clear()
        cached = _SHARED[plan.version] = {k: spoken[k] for k in sorted(owners) if len(owners[k]) > 1}
    return cached


def voice_of(key: str) -> str:
    """The espeak-ng voice of a prompt key: its language folder's, else Dutch."""
    lang = LANGUAGES.get(key.split("/", 1)[0]) if "/" in key else None
    return (lang or LANGUAGES[DEFAULT_LANGUAGE]).voice


def sentence(keys: tuple[str, ...], plan: NumberingPlan) -> str:
    """The text of a composed prompt, for logs, the simulator and tests."""
    texts = all_prompt_texts(plan)
    return " ".join(texts.get(k, f"<{k}>") for k in keys)
