"""The import rules of docs/architecture.md hold: layers, the emulator's isolation, no import circles.

The rules are import-linter contracts in pyproject.toml ([tool.importlinter]); this runs them over the code as
it is, every import counted (function-level ones too). A second test makes sure the check can fail: a module
that imports against the rules is caught.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", "--no-cache"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_rules_hold():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout


def test_a_backward_import_is_caught(tmp_path):
    for name in ("node", "coordinator"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    # the chain layer reaching into the network layer, and p2p into the daemon: both against the rules
    (tmp_path / "node" / "chain" / "_bad.py").write_text("from node.p2p import P2PNode\n")
    (tmp_path / "node" / "p2p" / "_bad.py").write_text("def f():\n    from node.daemon import daemon\n")
    res = _lint(tmp_path)
    assert res.returncode != 0
    assert "node.chain._bad -> node.p2p" in res.stdout
    assert "node.p2p._bad -> node.daemon" in res.stdout
