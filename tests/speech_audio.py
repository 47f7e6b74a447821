"""Test audio: espeak-ng speech as 8 kHz slin (what AudioSocket carries), no sox needed."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np

SAMPLE_RATE = 8000


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Windowed-sinc low-pass at the new Nyquist, then linear interpolation."""
    if src == dst:
        return x
    if dst < src:
        cutoff = 0.45 * dst / src  # cycles per input sample
        n = np.arange(-64, 65)
        taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(len(n))
        x = np.convolve(x, taps / taps.sum(), mode="same")
    t_out = np.arange(int(len(x) * dst / src)) * (src / dst)
    return np.interp(t_out, np.arange(len(x)), x)


def speak(text: str, voice: str = "nl", *, speed: int = 140, pad_ms: tuple[int, int] = (300, 500),
          gain: float = 1.0) -> bytes:
    """espeak-ng -> 16-bit LE mono 8 kHz PCM, padded with digital silence."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        check=True, capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    y = resample(x, rate, SAMPLE_RATE) * gain
    pre = np.zeros(SAMPLE_RATE * pad_ms[0] // 1000)
    post = np.zeros(SAMPLE_RATE * pad_ms[1] // 1000)
    y = np.concatenate([pre, y, post])
    return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(SAMPLE_RATE * 2 * ms // 1000)
