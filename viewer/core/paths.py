"""The only module that knows where bundled resources and per-user data live."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from platformdirs import user_data_dir

from viewer.core.constants import APP_NAME, APP_ORG


def resources_dir() -> Path:
    """``resources/`` in a source checkout, or ``viewer/_resources`` in an installed wheel."""
    here = Path(__file__).resolve().parent.parent  # viewer/
    for candidate in (here / "_resources", here.parent / "resources"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"Slicewise resources not found next to {here}")


def demo_study_dir() -> Path:
    return resources_dir() / "demo"


def bundled_model_path() -> Path:
    return resources_dir() / "models" / "slicewise_ich.onnx"


def icon_path(name: str) -> Path:
    path = resources_dir() / "icons" / f"{name}.svg"
    if not path.is_file():
        known = sorted(p.stem for p in (resources_dir() / "icons").glob("*.svg"))
        raise ValueError(f"Unknown icon {name!r}; known icons: {', '.join(known)}")
    return path


def user_data_path() -> Path:
    """Per-user data folder (review sessions, inference cache), created 0700 (an existing one only
    loses group/other access).

    ``SLICEWISE_DATA_DIR`` overrides it (tests, portable installs).
    """
    override = os.environ.get("SLICEWISE_DATA_DIR")
    path = Path(override) if override else Path(user_data_dir(APP_NAME, APP_ORG))
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix":
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:  # take group/other access away; never add back what the user took away
            path.chmod(mode & 0o700)
    return path
