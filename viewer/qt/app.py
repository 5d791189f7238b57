"""Qt application setup and the ``slicewise`` GUI entry point."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from viewer.core.constants import APP_NAME, APP_ORG
from viewer.core.dicom.isolated import warm_async as warm_decoders
from viewer.core.paths import demo_study_dir
from viewer.qt.ai import attach as attach_ai
from viewer.qt.gui_thread_gc import collect_on_gui_thread
from viewer.qt.main_window import MainWindow
from viewer.qt.pacs import attach as attach_pacs
from viewer.qt.results import attach as attach_results
from viewer.qt.review import attach as attach_review
from viewer.qt.settings import Settings
from viewer.qt.style import apply_dark_theme, icon

logger = logging.getLogger(__name__)

_configured = False


def configure_logging(level: int = logging.INFO) -> None:
    """One stderr handler for the whole app. Messages never carry patient identifiers or file paths."""
    root = logging.getLogger()
    if not any(getattr(h, "_slicewise", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._slicewise = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pydicom").setLevel(logging.WARNING)


def create_application(argv: Sequence[str] | None = None) -> QApplication:
    """The QApplication (created once), pyqtgraph options, the dark theme, and garbage collection on the
    GUI thread (:mod:`viewer.qt.gui_thread_gc`)."""
    global _configured
    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else APP_NAME, *(argv or [])])
    assert isinstance(app, QApplication)
    if not _configured:
        collect_on_gui_thread()  # Qt objects in reference cycles are freed on this thread only
        app.setApplicationName(APP_NAME)
        app.setOrganizationName(APP_ORG)
        app.setWindowIcon(icon("slicewise"))
        pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)
        apply_dark_theme(app)
        _configured = True
    return app


def build_main_window(
    paths: Sequence[str | Path] = (),
    settings: Settings | None = None,
    *,
    offer_resume: bool = True,
) -> MainWindow:
    """A configured MainWindow (not shown) with the AI, review and PACS extensions attached.

    ``paths`` start loading at once; ``offer_resume`` asks to reopen the last review session.
    Usable from tests.
    """
    create_application()
    window = MainWindow(settings=settings)
    ai = attach_ai(window)
    attach_review(window, offer_resume=offer_resume)  # after the AI: it connects to its predictions
    attach_pacs(window)
    attach_results(window)
    ai.dock.raise_()  # the findings tab in front until a review session is opened
    if paths:
        window.open_paths(paths)
    return window


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slicewise", description="Slicewise DICOM viewer")
    parser.add_argument("paths", nargs="*", help="DICOM files, folders, zip archives or DICOMDIR")
    parser.add_argument("--demo", action="store_true", help="open the bundled demo study")
    parser.add_argument("--quit-after-show", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(list(argv))


def _analyze_first_stack(window: MainWindow) -> None:
    """``--demo``: run the bundled model on the demo stack as soon as it is on screen."""

    def analyze_once(_stack: object) -> None:
        window.stack_shown.disconnect(analyze_once)
        if window.ai_controller is not None:
            window.ai_controller.analyze()

    window.stack_shown.connect(analyze_once)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    configure_logging()
    app = create_application()
    window = build_main_window()
    window.showMaximized()  # a reading workstation takes the screen
    paths: list[str] = list(args.paths)
    if args.demo:
        demo = demo_study_dir()
        if demo.is_dir() and any(p.is_file() for p in demo.rglob("*")):
            paths.append(str(demo))
        else:
            window.show_status("The demo study is not installed (resources/demo is empty)", 0)
    if paths:
        window.open_paths(paths)
    if args.demo:
        _analyze_first_stack(window)
    elif not args.quit_after_show:
        # Start the slice decoder process once the window is up, so that the first compressed slice
        # a reader opens does not wait for it (~0.3 s).
        QTimer.singleShot(500, warm_decoders)
    if args.quit_after_show:

        def _report() -> None:
            print(f"SHOWN {time.time():.6f}", flush=True)  # noqa: T201 (benchmark hook)
            window.close()
            app.quit()

        QTimer.singleShot(0, _report)
    return int(app.exec())
