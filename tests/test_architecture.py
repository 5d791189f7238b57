"""Layering: viewer.core imports no Qt, pyqtgraph, superqt or torch; viewer never imports training."""

from __future__ import annotations

import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import viewer.core

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = ("PySide6", "pyqtgraph", "superqt", "torch", "viewer.qt", "training")


def _lint_imports() -> str | None:
    candidate = Path(sys.executable).parent / "lint-imports"
    if candidate.exists():
        return str(candidate)
    return shutil.which("lint-imports")


def test_import_linter_contracts_kept() -> None:
    exe = _lint_imports()
    if exe is None:
        pytest.skip("import-linter is not installed")
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and "0 broken" in result.stdout


def test_importing_every_core_module_loads_no_gui_or_torch() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(viewer.core.__path__, prefix="viewer.core."))
    assert "viewer.core.dicom.loader" in modules and "viewer.core.dicom.volume" in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_IN_CORE)]
    assert bad == []


def test_the_viewer_window_starts_without_highdicom_or_torch() -> None:
    """highdicom's first use holds the GIL for about a second: the window and its controllers never
    import it (DICOM objects are built in the helper process of viewer.core.airesults.process). numba
    (~0.5 s to import) is imported on a reslice thread by the first oblique plane, never at start."""
    code = (
        "import json, os, sys\n"
        "os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from viewer.qt.app import build_main_window\n"
        "window = build_main_window(offer_resume=False)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "viewer.qt.main_window" in loaded
    heavy = ("highdicom", "torch", "training", "numba", "llvmlite")
    assert [m for m in loaded if m.split(".")[0] in heavy] == []
