"""Files written whole or not at all (generated configs, manifests)."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_whole(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``: a reader
    (Asterisk reloading its config, a second install) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
