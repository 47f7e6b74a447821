"""The layering rules (README "Layers") hold: import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
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


def test_the_core_contract_forbids_file_io(tmp_path):
    # the shipped core contract, applied to the module that does read files: it must break on csv,
    # which shows the standard library's I/O modules are really checked (not silently ignored)
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [core] = [c for c in contracts if c.get("source_modules") == ["ivr.core"] and "csv" in c["forbidden_modules"]]
    io_modules = [m for m in core["forbidden_modules"] if not m.startswith("ivr")]
    config = tmp_path / "plan_files.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["ivr"]\ninclude_external_packages = true\n\n'
                      '[[tool.importlinter.contracts]]\nname = "plan files as if core"\ntype = "forbidden"\n'
                      f'source_modules = ["ivr.plan_files"]\nforbidden_modules = {io_modules!r}\n'.replace("'", '"'))
    result = lint_imports("--config", str(config))
    assert result.returncode != 0 and "ivr.plan_files -> csv" in result.stdout, result.stdout
