"""The package's layering, as pyproject.toml's import-linter contracts write it down."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tinygpt

PACKAGE = Path(tinygpt.__file__).parent
PYPROJECT = PACKAGE.parents[1] / "pyproject.toml"


def _lint_imports() -> tuple[int, str]:
    """import-linter in a child process: its CLI reconfigures logging, which would silence
    the loggers later tests read."""
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    result = subprocess.run(
        [sys.executable, "-c", command, str(PYPROJECT), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.skipif(not PYPROJECT.exists(), reason="needs the source checkout's pyproject.toml")
def test_every_import_contract_is_kept():
    code, output = _lint_imports()
    assert code == 0, output
    assert "0 broken" in output


def test_the_model_never_imports_torch_distributed():
    """import-linter forbids only whole external packages (torch), so this one is read here."""
    for path in (PACKAGE / "model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            assert not any(n.startswith("torch.distributed") for n in names), path
