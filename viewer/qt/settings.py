"""Persistent user settings (QSettings, INI file in the per-user data folder, 0600 in a 0700 folder).

Opened folders and files are remembered (File › Recent studies, the last folder of the file dialogs)
only when the user allows it (File › Remember recent studies, off by default): folder names often
hold patient names. When it is off they are kept in memory for the running session only, and any
that were stored before are removed from the file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PySide6.QtCore import QSettings

from viewer.core.constants import WINDOW_PRESETS, Window
from viewer.core.paths import user_data_path
from viewer.core.review.fileutil import create_private_file, private_dir

logger = logging.getLogger(__name__)

MAX_RECENT = 10
DEFAULT_CINE_FPS = 15
MIN_CINE_FPS = 1
MAX_CINE_FPS = 60
SETTINGS_FILENAME = "settings.ini"
# may name patients: stored only when allowed
_PATH_KEYS = ("paths/recent", "paths/last_folder", "paths/export_folder")


def private_settings(path: Path | None = None) -> QSettings:
    """QSettings on the INI file, created 0600 in a 0700 folder first (Qt keeps an existing file's mode;
    a file it creates itself gets the umask default, typically 0644)."""
    path = path or (user_data_path() / SETTINGS_FILENAME)
    private_dir(path.parent)
    create_private_file(path)
    return QSettings(str(path), QSettings.Format.IniFormat)


class Settings:
    """Typed access to the settings the viewer keeps between runs.

    Stored as INI under :func:`viewer.core.paths.user_data_path` (``SLICEWISE_DATA_DIR`` in tests),
    never in the platform registry, so tests and portable installs stay self-contained.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or (user_data_path() / SETTINGS_FILENAME)
        self._qs = private_settings(self.path)
        self._session_recent: list[list[str]] = []
        self._session_last_folder = ""
        self._session_export_folder = ""
        if not self.remember_recent:
            self._forget_paths()

    def sync(self) -> None:
        self._qs.sync()

    # --- opened paths (only with the user's consent) -------------------------------------------------
    @property
    def remember_recent(self) -> bool:
        """Whether opened folders and files are written to the settings file (default: no)."""
        return _as_bool(self._qs.value("privacy/remember_recent", False))

    @remember_recent.setter
    def remember_recent(self, value: bool) -> None:
        self._qs.setValue("privacy/remember_recent", bool(value))
        if value:
            if self._session_recent:
                self._qs.setValue("paths/recent", json.dumps(self._session_recent[:MAX_RECENT]))
            if self._session_last_folder:
                self._qs.setValue("paths/last_folder", self._session_last_folder)
            if self._session_export_folder:
                self._qs.setValue("paths/export_folder", self._session_export_folder)
        else:
            self._forget_paths()

    def _forget_paths(self) -> None:
        if any(self._qs.contains(k) for k in _PATH_KEYS):
            for key in _PATH_KEYS:
                self._qs.remove(key)
            self._qs.sync()
            logger.info("Stored recent paths removed (remembering them is off)")

    @property
    def last_folder(self) -> str:
        if not self.remember_recent:
            return self._session_last_folder
        return str(self._qs.value("paths/last_folder", "") or "")

    @last_folder.setter
    def last_folder(self, value: str) -> None:
        self._session_last_folder = value
        if self.remember_recent:
            self._qs.setValue("paths/last_folder", value)

    @property
    def export_folder(self) -> str:
        """The folder of the last export (kept between runs only when remembering folders is on)."""
        if not self.remember_recent:
            return self._session_export_folder
        return str(self._qs.value("paths/export_folder", "") or "")

    @export_folder.setter
    def export_folder(self, value: str) -> None:
        self._session_export_folder = value
        if self.remember_recent:
            self._qs.setValue("paths/export_folder", value)

    # --- simple values -----------------------------------------------------------------------------

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
    def hang_on_open(self) -> bool:
        """Whether a study opened into an empty viewer is shown by its hanging protocol (default: yes)."""
        return _as_bool(self._qs.value("view/hang_on_open", True))

    @hang_on_open.setter
    def hang_on_open(self, value: bool) -> None:
        self._qs.setValue("view/hang_on_open", bool(value))

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

    @property
    def pacs_nodes_json(self) -> str:
        """The PACS nodes (a JSON list, without secrets: see viewer.qt.pacs.nodes)."""
        return str(self._qs.value("pacs/nodes", "[]") or "[]")

    @pacs_nodes_json.setter
    def pacs_nodes_json(self, value: str) -> None:
        self._qs.setValue("pacs/nodes", value)

    # --- recent studies ---------------------------------------------------------------------------
    def recent(self) -> list[list[str]]:
        """Recently opened path groups, newest first (one entry per open action); when remembering is
        off, those of this session only."""
        if not self.remember_recent:
            return [list(g) for g in self._session_recent]
        raw = self._qs.value("paths/recent", "[]")
        try:
            items = json.loads(str(raw))
        except ValueError:
            return []
        return [[str(p) for p in group] for group in items if isinstance(group, list) and group]

    def add_recent(self, paths: list[str]) -> None:
        items = [g for g in self.recent() if g != paths]
        items.insert(0, list(paths))
        self._session_recent = items[:MAX_RECENT]
        if self.remember_recent:
            self._qs.setValue("paths/recent", json.dumps(self._session_recent))

    def clear_recent(self) -> None:
        self._session_recent = []
        if self.remember_recent:
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
