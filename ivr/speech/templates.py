"""Query by example: score an utterance against spoken references of every candidate.

Each candidate phrase (municipality name, alias, former name, village) is spoken once by
espeak-ng, band-limited like a phone line, and kept as a sequence of mean-normalised
log-mel frames. An utterance is compared with every reference of its area code by
subsequence dynamic time warping: the reference may sit anywhere in the utterance
("ik woon in *Hansweert*"), at 0.5x to any slower speed. The score of a reference is
the mean cosine distance along its best path; lower is closer.

This is the classic isolated-word technique of template matching, with synthesised
references instead of enrolled speakers. It is cheap (no neural network: ~1 ms per
reference) and it knows every village, which the Whisper decoder could not afford to
score. Its weakness is equally classic: it matches *how espeak-ng says a name*; a
caller whose pronunciation differs a lot scores flat, with a small margin, and the
engine then hands the decision on (see :mod:`ivr.speech.cascade`).

The references' audio is cached on disk (one int16 ``.npy`` per phrase, in a folder per
voice); features are computed from it at load, so changing them does not speak 6,000
names again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import numba
import numpy as np

from ivr.speech.base import RecogniserError

__all__ = ["FeatureSettings", "ReferenceBank", "log_mel", "subsequence_dtw", "default_cache_dir"]

RATE = 8000


@dataclass(frozen=True)
class FeatureSettings:
    n_fft: int = 256
    win: int = 200  # 25 ms
    hop: int = 160  # 20 ms: 50 frames a second
    n_mels: int = 40
    f_min: float = 250.0
    f_max: float = 3500.0
    dynamic_range: float = 18.4  # natural log: energies further below the loudest are floored
    noise_subtract: float = 1.0  # x the noise spectrum (quietest fifth of the frames) subtracted
    noise_floor: float = 0.05  # ... but never below this share of the frame's own power
    voice: str = "nl"
    speed: int = 160
    pitch: int = 50

    @property
    def voice_key(self) -> str:
        """Names the cached audio: only how the references are spoken, not the features."""
        return f"{self.voice.replace('+', '_')}-s{self.speed}-p{self.pitch}"


def _mel_filters(s: FeatureSettings) -> np.ndarray:
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(s.f_min), hz_to_mel(s.f_max), s.n_mels + 2))
    bins = np.fft.rfftfreq(s.n_fft, 1.0 / RATE)
    fb = np.zeros((s.n_mels, bins.size), np.float32)
    for m in range(s.n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (bins - lo) / (mid - lo)
        down = (hi - bins) / (hi - mid)
        fb[m] = np.maximum(0.0, np.minimum(up, down))
    return fb


_FILTERS: dict[FeatureSettings, np.ndarray] = {}


def log_mel(audio_8k: np.ndarray, s: FeatureSettings = FeatureSettings()) -> np.ndarray:
    """(frames, n_mels) log-mel energies of 8 kHz audio, speech only, mean-normalised.

    Stationary line noise is estimated on the quietest fifth of the frames and
    subtracted from the power spectrum (spectral subtraction with a floor), so a noisy
    call and a clean reference meet in the middle."""
    audio = np.asarray(audio_8k, np.float32)
    if audio.size < s.win:
        return np.zeros((0, s.n_mels), np.float32)
    fb = _FILTERS.get(s)
    if fb is None:
        fb = _FILTERS[s] = _mel_filters(s)
    n = 1 + (audio.size - s.win) // s.hop
    idx = np.arange(s.win)[None, :] + s.hop * np.arange(n)[:, None]
    power = np.abs(np.fft.rfft(audio[idx] * np.hanning(s.win).astype(np.float32), s.n_fft, axis=1)) ** 2
    energy = 10 * np.log10(power.sum(axis=1) + 1e-10)
    if s.noise_subtract and n >= 10:
        quiet = power[energy <= np.percentile(energy, 20)]
        power = np.maximum(power - s.noise_subtract * quiet.mean(axis=0), s.noise_floor * power)
        energy = 10 * np.log10(power.sum(axis=1) + 1e-10)
    gate = max(np.percentile(energy, 10) + 10.0, energy.max() - 35.0, -60.0)
    voiced = np.nonzero(energy > gate)[0]
    if voiced.size == 0:
        return np.zeros((0, s.n_mels), np.float32)
    power = power[max(0, voiced[0] - 1): voiced[-1] + 2]
    mel = np.log(power @ fb.T + 1e-8)
    # like Whisper's front end: a floor under the quiet bins keeps line noise out of the match
    mel = np.maximum(mel, mel.max() - s.dynamic_range)
    return (mel - mel.mean(axis=0, keepdims=True)).astype(np.float32)


def voiced_ms(audio_8k: np.ndarray, threshold: float = 0.45) -> int:
    """How much of the audio is voiced (periodic at 60-400 Hz), in ms.

    A burst of noise can sit closer to some reference than a real answer does; it has no
    pitch. 40 ms frames every 20 ms; a frame is voiced when it is within 30 dB of the
    loudest and its normalised autocorrelation peaks above ``threshold`` at a pitch lag."""
    audio = np.asarray(audio_8k, np.float32)
    win, hop = 320, 160
    if audio.size < win:
        return 0
    n = 1 + (audio.size - win) // hop
    frames = audio[np.arange(win)[None, :] + hop * np.arange(n)[:, None]]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = (frames ** 2).sum(axis=1)
    loud = energy > energy.max() * 1e-3
    if not loud.any():
        return 0
    frames = frames[loud]
    spectrum = np.fft.rfft(frames, 2 * win, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, : win]
    peak = acf[:, RATE // 400: RATE // 60].max(axis=1) / np.maximum(acf[:, 0], 1e-12)
    return int((peak > threshold).sum()) * hop * 1000 // RATE


DTMF_LOW = (697, 770, 852, 941)
DTMF_HIGH = (1209, 1336, 1477, 1633)


def tone_share(audio_8k: np.ndarray, dominance: float = 0.6) -> float:
    """The share of the loud 40 ms frames that are DTMF: one low and one high keypad
    frequency (+-1 FFT bin) holding more than ``dominance`` of the frame's energy. Speech,
    even a sung vowel, spreads its energy over harmonics and formants; a key tone does not."""
    audio = np.asarray(audio_8k, np.float32)
    win = 320
    if audio.size < win:
        return 0.0
    n = audio.size // win
    power = np.abs(np.fft.rfft(audio[: n * win].reshape(n, win) * np.hanning(win), axis=1)) ** 2
    total = power.sum(axis=1)
    loud = total > total.max() * 1e-3
    if not loud.any():
        return 0.0
    hz_per_bin = RATE / win

    def band(freqs):
        bins = [int(round(f / hz_per_bin)) for f in freqs]
        return np.max([power[:, b - 1: b + 2].sum(axis=1) for b in bins], axis=0)

    share = (band(DTMF_LOW) + band(DTMF_HIGH)) / np.maximum(total, 1e-12)
    return float(np.mean(share[loud] > dominance))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + np.float32(1e-9))


def subsequence_dtw(references: Sequence[np.ndarray], utterance: np.ndarray, *, with_end: bool = False):
    """Per reference: the lowest mean cosine distance of a path through the whole reference
    against any stretch of the utterance, and the path's length in utterance frames (every
    step consumes one utterance frame); ``with_end``: also the utterance frame it ends on.

    Steps (reference frame j, utterance frame i): from (j-1, i-1), (j, i-1) (the caller is
    slower) or (j-2, i-1) (faster, up to 2x). The predecessor is the one with the lowest
    mean cost so far, so long and short paths compare fairly. The frame distances are one
    matrix product; the recurrence is compiled (:func:`_dtw_paths`), because a NumPy loop
    over frames held the interpreter lock for most of a decision and serialised
    simultaneous calls.
    """
    t = len(references)
    if t == 0 or utterance.shape[0] == 0:
        empty = (np.ones(t, np.float32), np.zeros(t, np.float32), np.zeros(t, np.int64))
        return empty if with_end else empty[:2]
    lens = np.array([max(1, r.shape[0]) for r in references], np.int64)
    width = int(lens.max())
    dims = utterance.shape[1]
    ref = np.zeros((t, width, dims), np.float32)
    for k, r in enumerate(references):
        ref[k, : r.shape[0]] = r
    frames = _unit(np.asarray(utterance, np.float32))
    cost = 1.0 - (_unit(ref).reshape(t * width, dims) @ frames.T).reshape(t, width, -1)
    best, best_len, best_end = _dtw_paths(np.ascontiguousarray(cost, np.float32), lens)
    return (best, best_len, best_end) if with_end else (best, best_len)


@numba.njit(nogil=True, cache=True)
def _dtw_paths(cost: np.ndarray, lens: np.ndarray):  # pragma: no cover - compiled
    """The recurrence of :func:`subsequence_dtw` over ``cost`` (reference, reference frame,
    utterance frame). Per reference, cells hold the path's summed cost and its length;
    column 0 is unreachable and column 1 a fresh start (mean 0), so a path may start at
    any utterance frame."""
    t, width, frames = cost.shape
    inf = np.float32(1e9)
    one = np.float32(1.0)
    best = np.full(t, np.inf, np.float32)
    best_len = np.ones(t, np.float32)
    best_end = np.zeros(t, np.int64)
    total = np.empty(width + 2, np.float32)
    count = np.empty(width + 2, np.float32)
    new_total = np.empty(width + 2, np.float32)
    new_count = np.empty(width + 2, np.float32)
    for k in range(t):
        n = lens[k]
        total[:] = inf
        count[:] = one
        total[1] = 0.0
        count[1] = 0.0
        for i in range(frames):
            for c in range(2, n + 2):  # column c holds reference frame c - 2
                diag = np.float32(0.0) if c == 2 else total[c - 1] / max(count[c - 1], one)
                stay = total[c] / max(count[c], one)
                skip = np.float32(0.0) if c == 3 else total[c - 2] / max(count[c - 2], one)
                if stay < diag:
                    src_total, src_count, low = total[c], count[c], stay
                else:
                    src_total, src_count, low = total[c - 1], count[c - 1], diag
                if skip < low:
                    src_total, src_count = total[c - 2], count[c - 2]
                new_total[c] = min(src_total + cost[k, c - 2, i], inf)
                new_count[c] = src_count + one
            for c in range(2, n + 2):
                total[c] = new_total[c]
                count[c] = new_count[c]
            here = total[n + 1] / count[n + 1]
            if here < best[k]:
                best[k] = here
                best_len[k] = count[n + 1]
                best_end[k] = i
    return best, best_len, best_end


def save_cached(path: Path, array: np.ndarray) -> None:
    """Write a cache file whole or not at all (concurrent writers each use their own temp
    file); a read-only cache only costs time, so a failure is ignored."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
        np.save(tmp, array)
        os.replace(tmp, path)
    except OSError:
        pass


def default_cache_dir() -> Path:
    env = os.environ.get("IVR_TEMPLATE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ivr14" / "templates"


class ReferenceBank:
    """Spoken references of phrases, computed once (espeak-ng + sox) and cached on disk."""

    def __init__(self, settings: FeatureSettings = FeatureSettings(), cache_dir: Path | None = None):
        missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
        if missing:
            raise RecogniserError(f"template references need {', '.join(missing)}: apt-get install -y espeak-ng sox")
        self.settings = settings
        self.cache_dir = (cache_dir or default_cache_dir()) / settings.voice_key
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._memory)

    def get(self, phrases: Iterable[str]) -> list[np.ndarray]:
        phrases = list(phrases)
        todo = [p for p in dict.fromkeys(phrases) if p not in self._memory]
        if todo:
            self.build(todo)
        return [self._memory[p] for p in phrases]

    def build(self, phrases: Sequence[str], workers: int = 2) -> None:
        todo = [p for p in dict.fromkeys(phrases) if p not in self._memory]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for p, feats in zip(todo, pool.map(self._load_or_speak, todo)):
                with self._lock:
                    self._memory[p] = feats

    def check_voice(self) -> None:
        """espeak-ng falls back to its plain voice, silently, for an unknown variant
        (variant names are case-sensitive file names): refuse that here."""
        voice = self.settings.voice
        if "+" not in voice:
            return
        base = replace(self.settings, voice=voice.split("+", 1)[0])
        if np.array_equal(self.speak("test", base), self.speak("test")):
            raise RecogniserError(f"espeak-ng has no voice variant {voice!r} (names are case-sensitive): "
                                  "it would speak with the plain voice")

    def ensure_cached(self, phrases: Sequence[str], workers: int = 2) -> int:
        """Speak into the disk cache whatever is not there yet; returns how many were spoken."""
        todo = [p for p in dict.fromkeys(phrases) if not self._path(p).exists()]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(self.audio, todo))
        return len(todo)

    def _path(self, phrase: str) -> Path:
        return self.cache_dir / (hashlib.sha1(phrase.encode()).hexdigest()[:20] + ".npy")

    def _load_or_speak(self, phrase: str) -> np.ndarray:
        """The phrase's features; its audio comes from the disk cache or from espeak-ng."""
        return log_mel(self.audio(phrase), self.settings)

    def audio(self, phrase: str) -> np.ndarray:
        """The phrase as spoken (float32, 8 kHz, phone band), from the disk cache or espeak-ng."""
        path = self._path(phrase)
        try:
            pcm = np.load(path)
        except (OSError, ValueError):
            pcm = np.clip(self.speak(phrase) * 32768.0, -32768, 32767).astype("<i2")
            save_cached(path, pcm)
        return pcm.astype(np.float32) / 32768.0

    def speak(self, phrase: str, settings: FeatureSettings | None = None) -> np.ndarray:
        s = settings or self.settings
        spoken = subprocess.run(["espeak-ng", "-v", s.voice, "-s", str(s.speed), "-p", str(s.pitch), "--stdout",
                                 phrase], capture_output=True, check=True, timeout=30).stdout
        line = subprocess.run(["sox", "-t", "wav", "-", "-t", "raw", "-r", str(RATE), "-e", "signed-integer",
                               "-b", "16", "-D", "-", "sinc", "300-3400", "rate", "8k"],
                              input=spoken, capture_output=True, check=True, timeout=30).stdout
        return np.frombuffer(line, "<i2").astype(np.float32) / 32768.0
