"""Render the caller-facing prompts to 8 kHz mono 16-bit WAV files for Asterisk.

``build_prompts(texts, out_dir)`` speaks every text with espeak-ng (each key in its language's
voice: ``nl`` at the top, ``en-gb`` for ``en/…``; ``ivr.core.prompts.voice_of``), converts it with
sox and writes ``out_dir/<key>.wav`` (a key may contain ``/``: ``lab/verbonden`` becomes
``out_dir/lab/verbonden.wav``). Asterisk plays them as ``ivr14/<key>`` once
``scripts/asterisk-install.sh`` has copied them to ``/usr/share/asterisk/sounds/ivr14/``.

A manifest (``out_dir/.manifest.json``) records a hash of what produced each file, so a rerun only
renders what changed. Recorded prompts override the synthetic ones: put ``<key>.wav`` (any rate,
channels or sample format sox can read) in ``$IVR_PROMPTS_DIR`` and it is converted instead; the
English ones go in its ``en/`` folder (``en/welkom.wav``, ``en/cijfer/1.wav``), as the keys say.

Usage: ``python -m ivr_lab.prompts_build OUT_DIR`` (texts from ``ivr.core.prompts.all_prompt_texts``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ivr.files import write_text_whole

MANIFEST = ".manifest.json"
FORMAT_VERSION = "1"  # bump to force a full re-render when the conversion below changes
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")

# Prompts the Asterisk side itself needs (dialplan fallback and the lab municipalities). They are
# used only when ivr.core.prompts does not define the key.
REQUIRED_DEFAULTS: dict[str, str] = {
    "welkom": "Welkom bij het veertien plus nummer van de gemeente.",
    "storing": "Door een storing kunnen wij uw keuze nu niet verwerken. "
    "U wordt doorverbonden met een medewerker.",
    "lab/verbonden": "U bent verbonden met de testgemeente.",
}


class PromptBuildError(RuntimeError):
    pass


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _run(cmd: list[str], stdin: bytes | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise PromptBuildError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")


_SOX_OUT = ["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"]


def _render_tts(text: str, voice: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="ivr14-prompt-") as tmp:
        raw = Path(tmp) / "tts.wav"
        # text on stdin so a leading '-' or quotes cannot be taken as options
        _run(["espeak-ng", "-v", voice, "-s", "155", "-w", str(raw), "--stdin"], stdin=text.encode())
        tmp_out = dest.with_name(dest.name + ".tmp.wav")
        _run(["sox", str(raw), *_SOX_OUT, str(tmp_out), "gain", "-n", "-3"])
        tmp_out.replace(dest)


def _render_recording(src: Path, dest: Path) -> None:
    tmp_out = dest.with_name(dest.name + ".tmp.wav")
    _run(["sox", str(src), *_SOX_OUT, str(tmp_out)])
    tmp_out.replace(dest)


def build_prompts(
    texts: dict[str, str],
    out_dir: Path,
    voice: str | None = None,
    overrides_dir: Path | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Render ``texts`` (key -> text) into ``out_dir``; return key -> WAV path. ``voice``: one
    espeak-ng voice for every key; by default each key's language's voice.

    Unchanged prompts (same text/voice, or same override recording) are skipped. WAVs of keys that
    were built before but are no longer in ``texts`` are removed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if overrides_dir is None and os.environ.get("IVR_PROMPTS_DIR"):
        overrides_dir = Path(os.environ["IVR_PROMPTS_DIR"])
    for key in texts:
        if not _KEY_RE.match(key):
            raise PromptBuildError(f"bad prompt key {key!r} (letters, digits, _ - and / only)")
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise PromptBuildError(f"{tool} not found (apt-get install espeak-ng sox)")

    manifest_path = out_dir / MANIFEST
    try:
        old: dict[str, str] = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        old = {}

    jobs = []
    new: dict[str, str] = {}
    result: dict[str, Path] = {}
    for key, text in texts.items():
        dest = out_dir / f"{key}.wav"
        result[key] = dest
        override = overrides_dir / f"{key}.wav" if overrides_dir else None
        if override is not None and override.is_file():
            digest = _sha(FORMAT_VERSION, "recording", override.read_bytes())
            job = (_render_recording, override, dest)
        else:
            spoken_by = voice or _voice_of(key)
            digest = _sha(FORMAT_VERSION, "tts", spoken_by, text)
            job = (_render_tts, text, spoken_by, dest)
        new[key] = digest
        if old.get(key) != digest or not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            jobs.append(job)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for fut in [pool.submit(fn, *args) for fn, *args in jobs]:
            fut.result()

    for key in set(old) - set(new):
        stale = out_dir / f"{key}.wav"
        if stale.is_file():
            stale.unlink()
    write_text_whole(manifest_path, json.dumps(new, indent=1, sort_keys=True))
    return result


def _voice_of(key: str) -> str:
    try:
        from ivr.core.prompts import voice_of
    except ImportError:  # the controller's prompt catalogue is not there (yet): Dutch
        return "nl"
    return voice_of(key)


def project_prompt_texts() -> dict[str, str]:
    """The project's prompts (``ivr.core.prompts.all_prompt_texts``, shipped plan) plus the Asterisk-side defaults."""
    texts = dict(REQUIRED_DEFAULTS)
    try:
        from ivr.core.prompts import all_prompt_texts
        from ivr.plan_files import load_base_plan
    except ImportError as exc:  # the controller's prompt catalogue is not there (yet)
        print(f"prompts_build: ivr.core.prompts unavailable ({exc}); using the built-in defaults only", file=sys.stderr)
    else:
        texts.update(all_prompt_texts(load_base_plan()))
    return texts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m ivr_lab.prompts_build OUT_DIR   (IVR_PROMPTS_DIR: recorded overrides)", file=sys.stderr)
        return 2
    out = Path(argv[0])
    before = _manifest_keys(out)
    built = build_prompts(project_prompt_texts(), out)
    changed = sum(1 for k in built if before.get(k) != _manifest_keys(out).get(k))
    print(f"prompts_build: {len(built)} prompts in {out} ({changed} rendered)", file=sys.stderr)
    return 0


def _manifest_keys(out: Path) -> dict[str, str]:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    raise SystemExit(main())
