"""Persistent user settings (QSettings, INI file in the per-user data folder)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PySide6.QtCore import QSettings

from viewer.core.constants import WINDOW_PRESETS, Window
from viewer.core.paths import user_data_path

logger = logging.getLogger(__name__)

MAX_RECENT = 10
DEFAULT_CINE_FPS = 15
MIN_CINE_FPS = 1
MAX_CINE_FPS = 60


class Settings:
    """Typed access to the settings the viewer keeps between runs.

    Stored as INI under :func:`viewer.core.paths.user_data_path` (``SLICEWISE_DATA_DIR`` in tests),
    never in the platform registry, so tests and portable installs stay self-contained.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or (user_data_path() / "settings.ini")
        self._qs = QSettings(str(self.path), QSettings.Format.IniFormat)

    def sync(self) -> None:
        self._qs.sync()

    # --- simple values -----------------------------------------------------------------------------
    @property
    def last_folder(self) -> str:
        return str(self._qs.value("paths/last_folder", "") or "")

    @last_folder.setter
    def last_folder(self, value: str) -> None:
        self._qs.setValue("paths/last_folder", value)

    @property
    def cine_fps(self) -> int:
        try:
            fps = int(self._qs.value("view/cine_fps", DEFAULT_CINE_FPS))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            fps = DEFAULT_CINE_FPS
        return min(MAX_CINE_FPS, max(MIN_CINE_FPS, fps))

    @cine_fps.setter
    def cine_fps(self, value: int) -> None:
        self._qs.setValue("view/cine_fps", int(value))

    @property
    def privacy(self) -> bool:
        return _as_bool(self._qs.value("view/privacy", False))

    @privacy.setter
    def privacy(self, value: bool) -> None:
        self._qs.setValue("view/privacy", bool(value))

    @property
    def export_demographics(self) -> bool:
        return _as_bool(self._qs.value("export/include_demographics", False))

    @export_demographics.setter
    def export_demographics(self, value: bool) -> None:
        self._qs.setValue("export/include_demographics", bool(value))

    def geometry(self) -> bytes | None:
        value = self._qs.value("window/geometry")
        return bytes(value) if value else None

    def window_state(self) -> bytes | None:
        value = self._qs.value("window/state")
        return bytes(value) if value else None

    def save_window(self, geometry: bytes, state: bytes) -> None:
        self._qs.setValue("window/geometry", geometry)
        self._qs.setValue("window/state", state)

    # --- recent studies ---------------------------------------------------------------------------
    def recent(self) -> list[list[str]]:
        """Recently opened path groups, newest first (one entry per open action)."""
        raw = self._qs.value("paths/recent", "[]")
        try:
            items = json.loads(str(raw))
        except ValueError:
            return []
        return [[str(p) for p in group] for group in items if isinstance(group, list) and group]

    def add_recent(self, paths: list[str]) -> None:
        items = [g for g in self.recent() if g != paths]
        items.insert(0, paths)
        self._qs.setValue("paths/recent", json.dumps(items[:MAX_RECENT]))

    def clear_recent(self) -> None:
        self._qs.setValue("paths/recent", "[]")

    # --- window presets ---------------------------------------------------------------------------
    def presets(self) -> dict[str, Window]:
        """The seven number-key presets: the built-in values, overridden by the user's own."""
        out = dict(WINDOW_PRESETS)
        raw = self._qs.value("view/presets", "{}")
        try:
            user = json.loads(str(raw))
        except ValueError:
            user = {}
        if isinstance(user, dict):
            for name, value in user.items():
                if name in out and isinstance(value, list) and len(value) == 2:
                    try:
                        out[name] = Window(float(value[0]), float(value[1]))
                    except (TypeError, ValueError):
                        logger.warning("Ignoring malformed window preset in settings")
        return out

    def set_preset(self, name: str, window: Window) -> None:
        if name not in WINDOW_PRESETS:
            raise ValueError(f"Unknown window preset {name!r}; known: {', '.join(WINDOW_PRESETS)}")
        raw = self._qs.value("view/presets", "{}")
        try:
            user = json.loads(str(raw))
        except ValueError:
            user = {}
        if not isinstance(user, dict):
            user = {}
        user[name] = [window.width, window.level]
        self._qs.setValue("view/presets", json.dumps(user))

    def reset_presets(self) -> None:
        self._qs.setValue("view/presets", "{}")


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
