"""Every sentence the caller hears, in one place (Dutch).

Keys are file stems: Asterisk plays ``ivr14/<key>``; the speech path plays the same WAV
files itself. Operators replace any of them with a recording of the same name.
Calls compose sentences from pieces (``voor`` + ``gemeente/GM0664`` + ``toets`` +
``cijfer/1``) so a menu always lists exactly the area code's municipalities.
"""

from __future__ import annotations

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

_SPOKEN_SUFFIXES = {"(NH)": "in Noord-Holland", "(L)": "in Limburg"}


def spoken_name(name: str) -> str:
    """How a municipality's name is said: "Bergen (NH)" -> "Bergen in Noord-Holland"."""
    for suffix, spoken in _SPOKEN_SUFFIXES.items():
        if name.endswith(suffix):
            return f"{name[: -len(suffix)].strip()} {spoken}"
    return name


DIGIT_WORDS = ["nul", "een", "twee", "drie", "vier", "vijf", "zes", "zeven", "acht", "negen"]


def all_prompt_texts(plan: NumberingPlan) -> dict[str, str]:
    """Every prompt key with its Dutch text: fixed phrases, digits, municipality names."""
    texts = dict(PHRASES)
    texts.update({f"cijfer/{d}": word for d, word in enumerate(DIGIT_WORDS)})
    texts.update({f"gemeente/{m.cbs_code}": spoken_name(m.name) for m in plan.municipalities.values()})
    return texts


def sentence(keys: tuple[str, ...], plan: NumberingPlan) -> str:
    """The text of a composed prompt, for logs, the simulator and tests."""
    texts = all_prompt_texts(plan)
    return " ".join(texts.get(k, f"<{k}>") for k in keys)
