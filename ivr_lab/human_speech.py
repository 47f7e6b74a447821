"""Human Dutch speech for the recognition benchmark, built at run time from Debian packages.

No registry carries human recordings of municipality names, so the benchmark uses what
Debian ``main`` does carry: the Dutch voice acting of Fish Fillets NG
(``fillets-ng-data-nl``: clips; ``fillets-ng-data``: ``script/<level>/dialogs_nl.lua``,
the transcripts). The packages are GPL: they are downloaded into a cache
(``apt-get download`` + ``dpkg-deb -x``) and never committed.

Each clip becomes a phone-band 8 kHz mono WAV (``sox ... sinc 300-3400``) in the cache.
The split is fixed by game level: a level's clips are all ``dev`` or all ``test``
(:func:`split_of`), so no sentence, recording session or level-specific wording is on
both sides. Tune on ``dev``; report ``test``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACKAGES = ("fillets-ng-data", "fillets-ng-data-nl")
GAME = Path("usr/share/games/fillets-ng")
_DIALOG = re.compile(r'dialogId\("([^"]+)",\s*"[^"]*",\s*"(?:[^"\\]|\\.)*"\)\s*dialogStr\("((?:[^"\\]|\\.)*)"\)')


class CorpusError(RuntimeError):
    """The human corpus cannot be had (download, unpacking or conversion failed)."""


@dataclass(frozen=True)
class Clip:
    clip_id: str  # the game's dialog id, e.g. "vit-m-hlava"
    level: str  # the game level (folder) it belongs to
    speaker: str  # the role in the id ("m" small fish, "v" big fish, "hs" statue, ...)
    text: str  # the Dutch transcript, as written in dialogs_nl.lua
    source: Path  # the packaged .ogg

    @property
    def split(self) -> str:
        return split_of(self.level)


def default_cache() -> Path:
    return Path(os.environ.get("IVR_HUMAN_CACHE", Path.home() / ".cache" / "ivr14" / "human"))


def split_of(level: str) -> str:
    """``dev`` or ``test``, fixed per game level by a hash of its name (about half each)."""
    return "dev" if int(hashlib.sha1(level.encode()).hexdigest()[:8], 16) % 2 == 0 else "test"


def ensure_unpacked(cache: Path | None = None) -> Path:
    """The unpacked game data (downloading the two packages once); returns the game root."""
    cache = cache or default_cache()
    root = cache / "root"
    game = root / GAME
    if (game / "sound").is_dir() and (game / "script").is_dir():
        return game
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        if not list(debs.glob(f"{package}_*.deb")):
            _download(package, debs)
    partial = cache / "root.partial"
    for deb in sorted(debs.glob("*.deb")):
        run = subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], capture_output=True, text=True)
        if run.returncode != 0:
            raise CorpusError(f"dpkg-deb -x {deb.name} failed: {run.stderr.strip()[-300:]}")
    partial.rename(root)
    return game


def _download(package: str, folder: Path) -> None:
    """``apt-get download``; on a machine whose package lists are missing or stale (a fresh
    one), ``apt-get update`` once and try again."""
    for attempt in (1, 2):
        run = subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True, text=True)
        if run.returncode == 0 and list(folder.glob(f"{package}_*.deb")):
            return
        if attempt == 1:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
    raise CorpusError(f"apt-get download {package} failed: {run.stderr.strip()[-300:]}")


def load_clips(game: Path) -> list[Clip]:
    """Every Dutch clip that has a Dutch transcript, in a stable order."""
    clips = []
    for script in sorted(game.glob("script/*/dialogs_nl.lua")):
        level = script.parent.name
        for clip_id, text in _DIALOG.findall(script.read_text(encoding="utf-8", errors="replace")):
            source = game / "sound" / level / "nl" / f"{clip_id}.ogg"
            if source.is_file():
                parts = clip_id.split("-")
                speaker = parts[1] if len(parts) > 2 else "?"
                clips.append(Clip(clip_id, level, speaker, text.replace('\\"', '"').strip(), source))
    return clips


LEAD_IN_S = 0.5  # line silence before the caller speaks: the clips start at their first word


def phone_wav(clip: Clip, cache: Path | None = None) -> Path:
    """The clip as a phone line carries it: 8 kHz mono 16-bit, 300-3400 Hz, after
    ``LEAD_IN_S`` of silence (cached)."""
    out = (cache or default_cache()) / f"wav-lead{LEAD_IN_S:g}" / clip.level / f"{clip.clip_id}.wav"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.wav")
        run = subprocess.run(["sox", "-q", "-V1", str(clip.source), "-r", "8000", "-c", "1", "-b", "16",
                              str(tmp), "sinc", "300-3400", "gain", "-n", "-3", "pad", f"{LEAD_IN_S:g}", "0"],
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise CorpusError(f"sox could not convert {clip.source.name}: {run.stderr.strip()[-200:]}")
        tmp.rename(out)
    return out


def convert_all(clips: list[Clip], cache: Path | None = None, workers: int = 4) -> list[Path]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: phone_wav(c, cache), clips))


def speech_seconds(path: Path) -> float:
    """Seconds from the first to the last frame within 35 dB of the loudest (20 ms frames)."""
    with wave.open(str(path), "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32)
    n = len(x) // 160
    if n == 0:
        return 0.0
    level = 10 * np.log10(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-3)
    loud = np.nonzero(level > level.max() - 35.0)[0]
    return float((loud[-1] - loud[0] + 1) * 0.02) if loud.size else 0.0
