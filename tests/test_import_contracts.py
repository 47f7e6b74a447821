"""The layering rules (README "Layers") hold: import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_contract_fails(tmp_path):
    # a contract the code cannot keep (the flow imports the plan): lint-imports must say so and fail
    config = tmp_path / "broken.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["ivr"]\n\n'
                      '[[tool.importlinter.contracts]]\nname = "flow without plan"\ntype = "forbidden"\n'
                      'source_modules = ["ivr.core.flow"]\nforbidden_modules = ["ivr.core.plan"]\n')
    result = lint_imports("--config", str(config))
    assert result.returncode != 0 and "BROKEN" in result.stdout
