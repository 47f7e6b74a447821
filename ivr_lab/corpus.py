"""Synthetic labelled speech corpus for the municipality recogniser.

``ivr corpus synth --out DIR --seed N --per-kind N --voices dev|test`` speaks
municipality names with espeak-ng's Dutch voices and writes telephone-band WAVs
(300-3400 Hz, 8 kHz, 16-bit mono after a mu-law round trip) plus ``manifest.csv``
with the columns ``path,area_code,expected_cbs_code,kind,text,voice`` (paths are
relative to the manifest).

Kinds:
  bare     the municipality name (sometimes a spoken alias such as "Den Bosch")
  phrase   free phrasing around the name ("eh, met Goes alstublieft")
  village  a village/kern of one candidate, under this area code, unique among them
  former   a former municipality merged into a candidate
  noisy    bare or phrase with white/pink/brown noise at 10-20 dB SNR

The development and test sets use disjoint voice variants and disjoint carrier
phrases (``--voices dev`` / ``--voices test``), so the test set measures what we
did not tune on. Only espeak-ng audio is produced: never MBROLA.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ivr.core.plan import NumberingPlan
from ivr.plan_files import DATA_DIR, load_base_plan

KINDS = ("bare", "phrase", "village", "former", "noisy")
RATE = 8000

# Disjoint voice variants and carrier phrases for development and test.
VOICES = {
    "dev": ("nl", "nl+m1", "nl+m3", "nl+f2", "nl+f4"),
    "test": ("nl+m2", "nl+m4", "nl+m7", "nl+f1", "nl+f3", "nl+f5"),
}
PHRASES = {
    "dev": (
        "ik wil graag de gemeente {n} bellen",
        "eh, met {n} alstublieft",
        "gemeente {n}",
        "{n} graag",
        "ik moet de gemeente {n} hebben",
        "ja hallo, ik wil {n}",
    ),
    "test": (
        "goedemorgen, ik wil de gemeente {n} spreken",
        "ehm, {n}",
        "de gemeente {n} alstublieft",
        "ik bel voor {n}",
        "verbind me maar door met {n}",
        "doet u mij maar {n}",
        "{n} alsjeblieft",
    ),
}
VILLAGE_PHRASES = {
    "dev": ("{n}", "ik woon in {n}", "ik bel uit {n}"),
    "test": ("{n}", "ik woon in {n}", "ik kom uit {n}"),
}
FORMER_PHRASES = {
    "dev": ("{n}", "gemeente {n}"),
    "test": ("{n}", "de gemeente {n} alstublieft"),
}


@dataclass(frozen=True)
class Item:
    area_code: str
    expected_cbs_code: str
    kind: str
    text: str
    voice: str
    speed: int
    pitch: int
    noise: str = ""
    snr_db: float = 0.0


def spoken_name(name: str) -> str:
    """How a caller says an official name: drop qualifiers like ``Bergen (NH)``."""
    return name.split(" (")[0].strip()


def _village_pool(plan: NumberingPlan, data_dir: Path = DATA_DIR) -> dict[str, list[tuple[str, str]]]:
    """area code -> [(place, cbs_code)]: places under that code, unique among its candidates."""
    by_code: dict[str, dict[str, set[str]]] = {}
    with (data_dir / "places.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            place = row["place"].strip()
            if not place or "(" in place or row.get("uncertain_in_source") == "True":
                continue
            for code in filter(None, row["area_codes"].split(";")):
                by_code.setdefault(code, {}).setdefault(place, set()).add(row["cbs_code"])
    pool: dict[str, list[tuple[str, str]]] = {}
    for code, area in plan.area_codes.items():
        if not area.shared:
            continue
        cands = plan.candidates(code)
        names = {spoken_name(n).lower() for m in cands for n in (m.name, *m.aliases, *m.former_names)}
        entries = []
        for place, owners in sorted(by_code.get(code, {}).items()):
            owners = owners & set(area.municipalities)
            if len(owners) == 1 and place.lower() not in names:
                entries.append((place, next(iter(owners))))
        if entries:
            pool[code] = entries
    return pool


def plan_items(plan: NumberingPlan, *, seed: int, per_kind: int, voices: str = "dev",
               kinds: tuple[str, ...] = KINDS) -> list[Item]:
    """Choose what to say: deterministic for a seed."""
    rng = random.Random(seed)
    shared = sorted(c for c, a in plan.area_codes.items() if a.shared)
    villages = _village_pool(plan)
    formers = {
        c: [(f, m.cbs_code) for m in plan.candidates(c) for f in m.former_names
            if spoken_name(f).lower() not in {spoken_name(o.name).lower() for o in plan.candidates(c)}]
        for c in shared
    }
    formers = {c: v for c, v in formers.items() if v}
    voice_list = VOICES[voices]
    items: list[Item] = []

    def style() -> tuple[str, int, int]:
        return rng.choice(voice_list), rng.randint(130, 185), rng.randint(30, 70)

    for kind in kinds:
        for _ in range(per_kind):
            if kind in ("bare", "phrase", "noisy"):
                code = rng.choice(shared)
                m = rng.choice(plan.candidates(code))
                said = spoken_name(m.name)
                spoken_aliases = [a for a in m.aliases if "(" not in a and len(a) > 3]
                if spoken_aliases and rng.random() < 0.15:
                    said = rng.choice(spoken_aliases)
                phrase = kind == "phrase" or (kind == "noisy" and rng.random() < 0.5)
                text = rng.choice(PHRASES[voices]).format(n=said) if phrase else said
                noise, snr = ("", 0.0)
                if kind == "noisy":
                    noise, snr = rng.choice(("white", "pink", "brown")), round(rng.uniform(10, 20), 1)
                items.append(Item(code, m.cbs_code, kind, text, *style(), noise, snr))
            elif kind == "village":
                code = rng.choice(sorted(villages))
                place, cbs = rng.choice(villages[code])
                text = rng.choice(VILLAGE_PHRASES[voices]).format(n=place)
                items.append(Item(code, cbs, kind, text, *style()))
            elif kind == "former":
                code = rng.choice(sorted(formers))
                name, cbs = rng.choice(formers[code])
                text = rng.choice(FORMER_PHRASES[voices]).format(n=spoken_name(name))
                items.append(Item(code, cbs, kind, text, *style()))
            else:
                raise ValueError(f"unknown kind {kind!r}")
    return items


# --- audio --------------------------------------------------------------------------

def _require_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install -y espeak-ng sox")


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate, n, width = w.getframerate(), w.getnframes(), w.getsampwidth()
        raw = w.readframes(n)
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit PCM")
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0, rate


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    pcm = np.clip(samples * 32768.0, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white)
    f = np.arange(len(spectrum), dtype=np.float32)
    f[0] = 1.0
    spectrum /= np.sqrt(f) if kind == "pink" else f
    out = np.fft.irfft(spectrum, n).astype(np.float32)
    return out / (np.std(out) + 1e-9)


def render(item: Item, out: Path, *, seed: int) -> None:
    """Speak ``item`` and write an 8 kHz telephone-band WAV at ``out``."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(
            ["espeak-ng", "-v", item.voice, "-s", str(item.speed), "-p", str(item.pitch), "-w", str(raw), item.text],
            check=True, capture_output=True,
        )
        speech, rate = _read_wav(raw)
        lead = np.zeros(int(rate * rng.uniform(0.25, 0.6)), np.float32)
        trail = np.zeros(int(rate * 0.8), np.float32)
        signal = np.concatenate([lead, speech, trail])
        if item.noise:
            active = speech[np.abs(speech) > 0.02 * np.max(np.abs(speech))]
            p_speech = float(np.mean(active**2)) if active.size else 1e-6
            noise = _noise(item.noise, len(signal), rng)
            signal = signal + noise * np.sqrt(p_speech / 10 ** (item.snr_db / 10))
        peak = float(np.max(np.abs(signal))) or 1.0
        signal = signal * (0.5 / peak) * rng.uniform(0.4, 1.0)  # varied levels
        mixed = Path(tmp) / "mixed.wav"
        write_wav(mixed, signal, rate)
        ulaw = Path(tmp) / "line.wav"
        # telephone band, 8 kHz, mu-law on the line, back to 16-bit linear
        subprocess.run(["sox", str(mixed), "-r", "8000", "-e", "mu-law", "-b", "8", str(ulaw),
                        "sinc", "300-3400", "rate", "8k"], check=True, capture_output=True)
        subprocess.run(["sox", str(ulaw), "-e", "signed-integer", "-b", "16", str(out)],
                       check=True, capture_output=True)


def synth(out_dir: Path, *, seed: int = 1, per_kind: int = 50, voices: str = "dev",
          kinds: tuple[str, ...] = KINDS, plan: NumberingPlan | None = None,
          progress: bool = True) -> Path:
    """Generate the corpus; return the manifest path."""
    _require_tools()
    plan = plan or load_base_plan()
    items = plan_items(plan, seed=seed, per_kind=per_kind, voices=voices, kinds=kinds)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "area_code", "expected_cbs_code", "kind", "text", "voice"])
        for i, item in enumerate(items):
            rel = f"{item.kind}/{i:04d}.wav"
            (out_dir / item.kind).mkdir(exist_ok=True)
            render(item, out_dir / rel, seed=seed * 100003 + i)
            voice = f"{item.voice} s{item.speed} p{item.pitch}" + (f" {item.noise}@{item.snr_db}dB" if item.noise else "")
            writer.writerow([rel, item.area_code, item.expected_cbs_code, item.kind, item.text, voice])
            if progress:
                print(f"\rsynth {i + 1}/{len(items)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return manifest


# --- CLI ----------------------------------------------------------------------------

def _cmd_synth(args: argparse.Namespace) -> int:
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = set(kinds) - set(KINDS)
    if unknown:
        print(f"unknown kinds: {', '.join(sorted(unknown))} (choose from {', '.join(KINDS)})", file=sys.stderr)
        return 2
    manifest = synth(Path(args.out), seed=args.seed, per_kind=args.per_kind, voices=args.voices, kinds=kinds)
    print(manifest)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("corpus", help="synthetic speech corpus (espeak-ng, telephone band)")
    sub = p.add_subparsers(dest="corpus_command", required=True)
    s = sub.add_parser("synth", help="speak municipality names into labelled 8 kHz WAVs + manifest.csv")
    s.add_argument("--out", default="corpus", help="output directory (default: ./corpus)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--per-kind", type=int, default=50, help="utterances per kind (default 50)")
    s.add_argument("--voices", choices=sorted(VOICES), default="dev",
                   help="voice variants and carrier phrases: dev (tuning) or test (held out)")
    s.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    s.set_defaults(func=_cmd_synth)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ivr-corpus")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["corpus", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
