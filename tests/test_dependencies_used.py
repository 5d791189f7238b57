"""Every runtime dependency declared in pyproject.toml is used: imported by the viewer, or a plugin
another dependency loads through its entry points (pydicom's decoders). superqt was declared and
never imported (issue 14)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
# used without an import of ours: pydicom imports pylibjpeg, GDCM, CharLS (pyjpegls) and Pillow
# itself, as the decoding plugins viewer/core/dicom/encapsulated.py names per transfer syntax
USED_THROUGH_PYDICOM = frozenset({"pylibjpeg", "python-gdcm", "pyjpegls", "pillow"})


def _declared() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0] for dep in project["dependencies"]]
    return sorted({n for n in names if n})


def _imported_top_levels() -> set[str]:
    pattern = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)
    found: set[str] = set()
    for path in (ROOT / "viewer").rglob("*.py"):
        found.update(pattern.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_declared_dependency_is_used() -> None:
    by_dist: dict[str, set[str]] = {}
    for top, dist_names in metadata.packages_distributions().items():
        for dist_name in dist_names:
            by_dist.setdefault(dist_name.lower().replace("_", "-"), set()).add(top)
    imported = _imported_top_levels()
    unused = []
    for name in _declared():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not for this platform (onnxruntime vs onnxruntime-gpu)
        if dist.entry_points or name in USED_THROUGH_PYDICOM:
            continue  # a plugin: loaded by the package that defines its entry-point group
        tops = by_dist.get(dist.metadata["Name"].lower().replace("_", "-"), set())
        if not tops & imported:
            unused.append(name)
    assert unused == [], f"declared but never imported by viewer/: {unused}"
