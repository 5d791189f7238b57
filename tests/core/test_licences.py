"""Every runtime dependency of the default install is permissively licensed (issue 14): Slicewise is
MIT, so no GPL/AGPL package may be required. Weak copyleft (LGPL, MPL) is allowed for libraries
used unmodified through their public interface (PySide6 is LGPL-3.0), and is listed."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

STRONG_COPYLEFT = re.compile(r"\b(A?GPL|GNU (Affero )?General Public|EUPL|OSL|SSPL|CC-BY-SA)", re.I)
WEAK_COPYLEFT = re.compile(r"\b(LGPL|Lesser General Public|MPL|Mozilla Public|EPL|CDDL)", re.I)
# Packages whose metadata names no licence at all, with the licence of their source (checked by hand).
DECLARED_ELSEWHERE: dict[str, str] = {}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(root: str = "slicewise") -> dict[str, metadata.Distribution]:
    """The installed distributions the default install of ``root`` requires, transitively (no extras)."""
    env = {k: str(v) for k, v in default_environment().items()}
    found: dict[str, metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = _norm(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional platform package not installed here
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(req.name)
    found.pop(_norm(root))
    return found


def _copyleft_only(licence: str) -> bool:
    """Strong copyleft with no permissive or weak-copyleft alternative ("LGPL-3.0-only OR GPL-3.0-only"
    may be taken under the LGPL)."""
    return all(STRONG_COPYLEFT.search(choice) for choice in re.split(r"\s+OR\s+", licence))


def licence_of(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    expression = meta.get("License-Expression")
    if expression:
        return expression
    found = meta.get_all("Classifier") or []
    classifiers = [c.split(" :: ")[-1] for c in found if c.startswith("License ::")]
    text = (meta.get("License") or "").strip().splitlines()
    short = text[0][:80] if text else ""
    parts = [p for p in [short, *classifiers] if p and p.upper() != "UNKNOWN"]
    return "; ".join(parts) or DECLARED_ELSEWHERE.get(_norm(meta["Name"]), "")


def test_no_runtime_dependency_is_copyleft() -> None:
    closure = runtime_closure()
    assert "pydicom" in closure and "numpy" in closure
    rows = sorted((_norm(d.metadata["Name"]), d.version, licence_of(d)) for d in closure.values())
    for name, version, licence in rows:
        kind = "weak copyleft" if WEAK_COPYLEFT.search(licence) else ""
        print(f"{name:32} {version:14} {licence} {kind}")
    unknown = [name for name, _, licence in rows if not licence]
    assert unknown == [], f"no licence metadata: {unknown}"
    strong = [(name, licence) for name, _, licence in rows if _copyleft_only(licence)]
    assert strong == [], f"copyleft runtime dependencies: {strong}"


def test_the_gpl_decoder_is_not_in_the_default_install() -> None:
    assert "pylibjpeg-libjpeg" not in runtime_closure()
