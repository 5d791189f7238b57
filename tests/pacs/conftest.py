"""PACS test fixtures: one real Orthanc per test session (skipped, with the reason, where none can run),
loaded with the demo study and pydicom's vendor files; nodes for both protocols; a private cache."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from tests.pacs.orthanc import (
    CLIENT_AET,
    ORTHANC_AET,
    PASSWORD,
    USER,
    Orthanc,
    running_orthanc,
    unavailable_reason,
)
from viewer.core.dicom.model import SliceSource
from viewer.core.dicom.pack import read_index
from viewer.core.dicom.sources import read_source_bytes
from viewer.core.pacs import AuthKind, InstanceCache, PacsNode, RetrievedInstance
from viewer.core.paths import demo_study_dir

if TYPE_CHECKING:
    from pytestqt.qtbot import QtBot

    from viewer.qt.main_window import MainWindow
    from viewer.qt.pacs import PacsController

# pydicom's vendor files with distinct SOP Instance UIDs: explicit LE CT, J2K lossless MR, JPEG RGB SC,
# J2K enhanced MR (multi-frame)
VENDOR_FILES = (
    "CT_small.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
)


@dataclass(frozen=True)
class Loaded:
    server: Orthanc
    demo_files: tuple[Path, ...]
    demo_study_uid: str
    demo_series_uid: str
    vendor_files: tuple[Path, ...]


def vendor_paths() -> tuple[Path, ...]:
    return tuple(Path(str(get_testdata_file(name))) for name in VENDOR_FILES)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    demo = tuple(sorted(demo_study_dir().glob("*.dcm")))
    vendor = vendor_paths()
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        server.upload([*demo, *vendor])
        head = dcmread(demo[0], stop_before_pixels=True)
        yield Loaded(server, demo, str(head.StudyInstanceUID), str(head.SeriesInstanceUID), vendor)


def dimse_node(server: Orthanc, **changes: object) -> PacsNode:
    fields: dict[str, object] = {
        "name": "test-orthanc",
        "host": "127.0.0.1",
        "port": server.dicom_port,
        "called_ae": ORTHANC_AET,
        "calling_ae": CLIENT_AET,
    }
    fields.update(changes)
    return PacsNode(**fields)  # type: ignore[arg-type]


def web_node(server: Orthanc, **changes: object) -> PacsNode:
    fields: dict[str, object] = {
        "name": "test-orthanc",
        "dicomweb_url": server.dicomweb_url,
        "auth": AuthKind.BASIC,
        "username": USER,
        "secret": PASSWORD,
    }
    fields.update(changes)
    return PacsNode(**fields)  # type: ignore[arg-type]


@pytest.fixture
def cache(tmp_path: Path) -> InstanceCache:
    return InstanceCache(tmp_path / "pacs-cache")


def kept_sources(root: Path) -> list[SliceSource]:
    """Every instance kept under ``root`` (a cache, a study or a series folder): its own files and the
    indexed members of its packs (a WADO-RS retrieve keeps a round's instances in one pack)."""
    files = [SliceSource(p) for p in sorted(root.rglob("*.dcm"))]
    packs = sorted(root.rglob("*.pack"))
    return files + [SliceSource(p, e.member) for p in packs for e in read_index(p).entries]


def read_kept(item: RetrievedInstance | SliceSource, *, stop_before_pixels: bool = False) -> Dataset:
    """A cached instance read back (its file, or its member of a pack)."""
    source = item.source if isinstance(item, RetrievedInstance) else item
    return dcmread(io.BytesIO(read_source_bytes(source)), stop_before_pixels=stop_before_pixels)


@contextlib.contextmanager
def no_system_keyring() -> Iterator[None]:
    """Never the user's keyring in a test: keyring (when installed) gets its 'fail' backend, so the
    secrets go to the 0600 file in the test's own data folder."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        yield
        return
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


def controller(win: MainWindow) -> PacsController:
    from viewer.qt.pacs import PacsController

    pacs = win.pacs_controller  # type: ignore[attr-defined]
    assert isinstance(pacs, PacsController)
    return pacs


@pytest.fixture
def window(qtbot: QtBot) -> Iterator[MainWindow]:
    """The real main window with its PACS dock, never touching the user's keyring (the GUI tests)."""
    from viewer.qt.app import build_main_window

    with no_system_keyring():
        win = build_main_window(offer_resume=False)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    yield win
    controller(win).shutdown()
