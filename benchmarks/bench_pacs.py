"""PACS benchmark (issue 13): Slicewise's retrieve and query against a real Orthanc on loopback.

Starts a throw-away Orthanc (Debian packages orthanc, orthanc-dicomweb, orthanc-gdcm; DCMTK for the
floor), uploads a generated 300-slice 512 x 512 CT twice (uncompressed, Explicit VR Little Endian; and
stored as JPEG 2000 lossless) and 1,000 one-instance studies, then times, interleaved in each round:

- C-GET: ``DimseClient.retrieve_series`` (C-FIND at image level, C-GET, each instance checked and written
  atomically into the cache) against DCMTK ``getscu`` writing the same series to a folder (the floor),
  and against a bare pynetdicom C-GET that only writes the bytes (a second, stricter floor);
- WADO-RS, uncompressed and JPEG 2000: ``DicomWebClient.retrieve_series`` (WADO-RS multipart in the
  stored transfer syntax, checked, cached) against one plain ``requests`` multipart download of the
  series written to one file (the floor; target <= 1.5x), and against the same download written as
  one file per part (temporary name, rename: what a cache of one file per instance cannot avoid; no
  checks, no threads, each part written by the reading thread as soon as it has arrived);
- the first slice on screen: in the real window (offscreen Qt), the study row selected in the PACS dock
  and **Retrieve** pressed, until the first image is painted (target <= 0.5 s; the cache empty, a new
  window each time);
- queries of the 1,000 studies: QIDO-RS and C-FIND through our clients, and to a filled table (the
  dock's **Search** pressed until its table holds the 1,000 rows and has been painted; target <= 0.3 s),
  with a plain ``requests`` QIDO-RS (the floor) and DCMTK ``findscu`` for reference, asking two keys and
  asking the keys our study query asks.

Each round measures everything once, in a new (seeded) order, each measurement after ``os.sync()``
(not timed; see ``_write_back``; ``--no-sync`` leaves it out) and a 0.3 s pause. Prints medians,
the time to the first instance written, the first rows in the table and the ratios to the floors.
Usage: ``python benchmarks/bench_pacs.py [--repeats N] [--slices 300] [--studies 1000] [--queries-only]
[--only wado] [--no-sync]`` (``--queries-only``: no CT, only the queries of the studies;
``--only wado``: only the WADO-RS retrieves and their floors, no DCMTK needed).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import requests  # noqa: E402
from pydicom import dcmread  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402
from PySide6.QtCore import QEventLoop, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from benchmarks.bench_load import store_noisy_j2k  # noqa: E402
from tests.factories import make_ct_slice, write_ct_series  # noqa: E402
from tests.pacs.conftest import controller, no_system_keyring  # noqa: E402
from tests.pacs.orthanc import CLIENT_AET, ORTHANC_AET, PASSWORD, USER, running_orthanc, unavailable_reason  # noqa: E402
from viewer.core.pacs import (  # noqa: E402
    AuthKind,
    DicomWebClient,
    DimseClient,
    InstanceCache,
    PacsNode,
    RetrievedInstance,
    StudyMatch,
    StudyQuery,
)
from viewer.core.pacs.http_guard import multipart_boundary  # noqa: E402
from viewer.qt.app import build_main_window, create_application  # noqa: E402
from viewer.qt.main_window import MainWindow  # noqa: E402
from viewer.qt.pacs import PacsController  # noqa: E402
from viewer.qt.pacs.nodes import NodeEntry, NodeProtocol  # noqa: E402

SETTLE_S = 0.3
# What each retrieve and floor wrote is kept until the run ends (the temporary folder is removed then),
# not deleted after each measurement: ext4 does not reuse an inode freed within the last ~30 s, and
# looks for a free one past each of them, so creating 300 files right after deleting the last round's
# 300 (and the other measurements' files) spent most of its system time in ext4_create ->
# recently_deleted (perf, 2026-11-29); a reader's retrieve does not follow such a deletion. ~0.7 GB a
# round on disk.
ACCEPT_SERIES = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FINDSCU_TWO_KEYS = ("QueryRetrieveLevel=STUDY", "PatientID=BENCH*", "StudyInstanceUID", "PatientName")
# what DimseClient.find_studies asks (viewer/core/pacs/dimse.py)
FINDSCU_OUR_KEYS = (
    "SpecificCharacterSet=ISO_IR 192",
    "QueryRetrieveLevel=STUDY",
    "StudyInstanceUID",
    "PatientName",
    "PatientID=BENCH*",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
QUERIES = (
    "QIDO-RS 1,000 studies (ours)",
    "QIDO-RS to a filled table",
    "QIDO-RS plain requests (floor)",
    "C-FIND 1,000 studies (ours)",
    "C-FIND to a filled table",
    "findscu",
    "findscu (our keys)",
)


def _write_back() -> float:
    """Write the dirty page cache back (``os.sync``, before a measurement, not timed) and return the MB
    still dirty. A round writes ~0.7 GB (~0.66 GB with ``--only wado``) and keeps it: without this the
    dirty pages pile up over the rounds until the kernel's background writeback starts (here at ~2 GB,
    ``vm.dirty_background_ratio`` 10 %) and then runs during the measurements, taking CPU and disk from
    whichever runs then: the plain download's rounds went from 0.15 to 0.45 s within one run. A reader's
    retrieve does not follow gigabytes written seconds before."""
    os.sync()
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("Dirty:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _noisy_j2k(paths: list[Path]) -> None:
    """CT-like noise, stored as JPEG 2000 lossless in place (see bench_load's ``store_noisy_j2k``)."""
    store_noisy_j2k(paths)


def _small_studies(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    hu = np.zeros((8, 8), dtype=np.int16)
    for k in range(n):
        ds = make_ct_slice(
            hu,
            position=(0, 0, 0),
            study_uid=generate_uid(),
            series_uid=generate_uid(),
            frame_of_reference_uid=generate_uid(),
            patient_name=f"BENCH^{k:04d}",
            patient_id=f"BENCH-{k:04d}",
        )
        path = folder / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def retrieve_window(
    app: QApplication, node: PacsNode, matches: list[StudyMatch], study: str
) -> tuple[MainWindow, PacsController]:
    """A new shown window whose PACS dock lists ``matches`` (from DICOMweb ``node``, saved once) with
    ``study``'s row selected: Retrieve is one click away."""
    with no_system_keyring():
        win = build_main_window(offer_resume=False)
    win.resize(1280, 860)
    win.show()
    app.processEvents()
    pacs = controller(win)
    if pacs.nodes.get(node.name) is None:
        pacs.save_node(NodeEntry(node, NodeProtocol.DICOMWEB), "")
    panel = pacs.panel
    panel.node.setCurrentText(node.name)
    panel.show_studies(matches)
    item = panel.study_item(study)
    assert item is not None
    panel.results.setCurrentItem(item)
    app.processEvents()
    return win, pacs


def empty_cache(cache: InstanceCache) -> None:
    """The PACS cache empty again between rounds: its studies and its index."""
    for entry in cache.root.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _wait(app: QApplication, done: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not done():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.0005)


def _wait_for_events(
    app: QApplication, done: Callable[[], bool], what: str, timeout_s: float = 120.0
) -> None:
    """Like :func:`_wait`, but the GUI thread sleeps until an event comes, as the app's own event loop
    does (a 20 ms timer wakes it for the deadline): ``_wait``'s polling every 0.5 ms takes the GIL ~2,000
    times a second from the threads receiving a query's answer."""
    timer = QTimer()
    timer.start(20)
    deadline = time.perf_counter() + timeout_s
    try:
        while not done():
            if time.perf_counter() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
    finally:
        timer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--queries-only", action="store_true", help="only the queries (no CT, no retrieve)")
    parser.add_argument(
        "--no-sync",
        action="store_true",
        help="do not write the dirty page cache back before each measurement (see _write_back)",
    )
    parser.add_argument(
        "--only", choices=["wado"], help="wado: only the WADO-RS retrieves and their floors (quick rounds)"
    )
    args = parser.parse_args()
    reason = unavailable_reason()
    if args.only == "wado":
        args.studies = 0  # no small studies, no DIMSE, no window
    if reason or (not shutil.which("getscu") and args.only != "wado"):
        print(f"skipped: {reason or 'DCMTK getscu missing (Debian package dcmtk)'}")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-pacs-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["SLICEWISE_DATA_DIR"] = str(tmp / "data")  # the windows' settings, secrets and cache
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "data" / "config")
        app = create_application()
        if args.queries_only:
            args.slices = 1  # one slice each: the names below stay defined; nothing is retrieved
        print(
            f"generating a {args.slices}-slice 512x512 CT (twice) and {args.studies} small studies ...",
            flush=True,
        )
        ct = write_ct_series(
            tmp / "ct", args.slices, rows=512, columns=512, shuffle=False, random_names=False
        )
        ct_j2k = write_ct_series(
            tmp / "ct-j2k", args.slices, rows=512, columns=512, shuffle=False, random_names=False
        )
        t0 = time.perf_counter()
        _noisy_j2k(ct_j2k)
        print(f"  the second stored as JPEG 2000 lossless in {time.perf_counter() - t0:.0f} s", flush=True)
        small = _small_studies(tmp / "small", args.studies)
        head = dcmread(ct[0], stop_before_pixels=True)
        study, series = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)
        head_j2k = dcmread(ct_j2k[0], stop_before_pixels=True)
        study_j2k, series_j2k = str(head_j2k.StudyInstanceUID), str(head_j2k.SeriesInstanceUID)
        series_bytes = sum(p.stat().st_size for p in ct)
        j2k_bytes = sum(p.stat().st_size for p in ct_j2k)
        with running_orthanc(tmp / "orthanc") as server:
            t0 = time.perf_counter()
            server.upload(ct)
            server.upload(ct_j2k)
            server.upload(small)
            print(
                f"Orthanc {server.dicomweb_url}: uploaded {len(ct) + len(ct_j2k) + len(small)} files in "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            dimse_node = PacsNode(
                "bench-dimse",
                host="127.0.0.1",
                port=server.dicom_port,
                called_ae=ORTHANC_AET,
                calling_ae=CLIENT_AET,
            )
            web_node = PacsNode(
                "bench",
                dicomweb_url=server.dicomweb_url,
                auth=AuthKind.BASIC,
                username=USER,
                secret=PASSWORD,
            )
            dimse, web = DimseClient(dimse_node), DicomWebClient(web_node)
            session = requests.Session()
            session.auth = (USER, PASSWORD)
            counter = iter(range(10**6))
            firsts: dict[str, list[float]] = {"C-GET": [], "WADO-RS": [], "WADO-RS J2K": []}
            first_rows: dict[str, list[float]] = {"QIDO-RS": [], "C-FIND": []}
            # the table's own part: the search job's answer (every match parsed into rows, on its thread)
            # to the filled, painted table
            table_part: dict[str, list[float]] = {"QIDO-RS": [], "C-FIND": []}

            def ours(
                client: DicomWebClient | DimseClient, label: str, study: str, series: str
            ) -> Callable[[], float]:
                def run() -> float:
                    cache = InstanceCache(tmp / f"cache-{next(counter)}")
                    start = time.perf_counter()
                    first: list[float] = []

                    def arrived(_item: RetrievedInstance) -> None:
                        if not first:
                            first.append(time.perf_counter() - start)

                    report = client.retrieve_series(study, series, cache, on_instance=arrived)
                    elapsed = time.perf_counter() - start
                    assert report.complete and len(report.received) == len(ct), report.failed[:3]
                    firsts[label].append(first[0])
                    return elapsed  # the cache is kept until the run ends (see the note at SETTLE_S)

                return run

            def getscu() -> float:
                out = tmp / f"getscu-{next(counter)}"
                out.mkdir()
                start = time.perf_counter()
                subprocess.run(
                    [
                        "getscu",
                        "-S",
                        "-aet",
                        CLIENT_AET,
                        "-aec",
                        ORTHANC_AET,
                        "-od",
                        str(out),
                        "-k",
                        "QueryRetrieveLevel=SERIES",
                        "-k",
                        f"StudyInstanceUID={study}",
                        "-k",
                        f"SeriesInstanceUID={series}",
                        "127.0.0.1",
                        str(server.dicom_port),
                    ],
                    check=True,
                    capture_output=True,
                )
                elapsed = time.perf_counter() - start
                got = len(list(out.iterdir()))
                assert got == len(ct), f"getscu wrote {got} files"
                return elapsed

            def bare_cget() -> float:
                """pynetdicom C-GET writing each instance's bytes to a file: no listing, no check, no
                cache (a second floor: DCMTK's getscu is slow on this machine)."""
                from pynetdicom import AE, evt
                from pynetdicom.presentation import build_role
                from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GetModel

                out = tmp / f"bare-{next(counter)}"
                out.mkdir()
                ae = AE(ae_title=CLIENT_AET)
                ae.maximum_pdu_size = 0
                ae.add_requested_context(GetModel)
                ae.add_requested_context(str(head.SOPClassUID), "1.2.840.10008.1.2.1")

                def store(event: evt.Event) -> int:
                    (out / f"{event.request.AffectedSOPInstanceUID}.dcm").write_bytes(event.encoded_dataset())
                    return 0

                start = time.perf_counter()
                assoc = ae.associate(
                    "127.0.0.1",
                    server.dicom_port,
                    ae_title=ORTHANC_AET,
                    ext_neg=[build_role(str(head.SOPClassUID), scp_role=True)],
                    evt_handlers=[(evt.EVT_C_STORE, store)],
                )
                ident = Dataset()
                ident.QueryRetrieveLevel = "SERIES"
                ident.StudyInstanceUID, ident.SeriesInstanceUID = study, series
                for _status, _ in assoc.send_c_get(ident, GetModel):
                    pass
                assoc.release()
                elapsed = time.perf_counter() - start
                assert len(list(out.iterdir())) == len(ct)
                return elapsed

            def wado_floor(study: str, series: str, min_bytes: int) -> Callable[[], float]:
                def run() -> float:
                    out = tmp / f"wado-{next(counter)}.multipart"
                    start = time.perf_counter()
                    with (
                        session.get(
                            f"{server.dicomweb_url}/studies/{study}/series/{series}",
                            headers={"Accept": ACCEPT_SERIES},
                            stream=True,
                            timeout=60,
                        ) as resp,
                        out.open("wb") as fh,
                    ):
                        resp.raise_for_status()
                        for chunk in resp.iter_content(1 << 20):
                            fh.write(chunk)
                    elapsed = time.perf_counter() - start
                    assert out.stat().st_size > min_bytes
                    return elapsed

                return run

            def wado_split_floor(study: str, series: str, n_parts: int) -> Callable[[], float]:
                """The plain download written as one file per part (temporary name, rename), each part
                as soon as its closing delimiter has arrived, by the reading thread: the file system's
                cost of one file per instance, without checks or threads."""

                def run() -> float:
                    out = tmp / f"split-{next(counter)}"
                    out.mkdir()
                    start = time.perf_counter()
                    written = 0
                    with session.get(
                        f"{server.dicomweb_url}/studies/{study}/series/{series}",
                        headers={"Accept": ACCEPT_SERIES},
                        stream=True,
                        timeout=60,
                    ) as resp:
                        resp.raise_for_status()
                        boundary = multipart_boundary(resp.headers.get("Content-Type", ""))
                        assert boundary is not None
                        delimiter = b"\r\n--" + boundary
                        buf = bytearray(b"\r\n")  # the first boundary has no CRLF before it
                        seen_first = False
                        for chunk in resp.iter_content(1 << 20):
                            buf += chunk
                            while (at := buf.find(delimiter, 1 if seen_first else 0)) >= 0:
                                if seen_first:
                                    content = memoryview(buf)[buf.index(b"\r\n\r\n") + 4 : at]
                                    part = out / f".part-{written}"
                                    with part.open("wb") as fh:
                                        fh.write(content)
                                    content.release()
                                    part.rename(out / f"{written}.dcm")
                                    written += 1
                                seen_first = True
                                del buf[:at + len(delimiter)]
                    elapsed = time.perf_counter() - start
                    assert written == n_parts, written
                    return elapsed

                return run

            def gui_first_slice() -> float:
                """A new window; the study row selected in the PACS dock; Retrieve pressed; until the first
                image is painted. The retrieve and the study's load are then let finish, the window
                closed and the cache emptied."""
                matches = web.find_studies(StudyQuery(study_uid=study))
                win, pacs = retrieve_window(app, web_node, matches, study)
                panel = pacs.panel
                finished: list[object] = []
                pacs.retrieve_finished.connect(finished.append)
                start = time.perf_counter()
                panel.btn_retrieve.click()
                _wait(app, lambda: win.view.volume is not None, "the first image")
                win.view.repaint()  # painted now
                elapsed = time.perf_counter() - start
                _wait(app, lambda: bool(finished) and not win.is_loading(), "the retrieve and load")
                win.close()
                app.processEvents()
                empty_cache(pacs.cache)
                return elapsed

            with no_system_keyring():
                query_window = build_main_window(offer_resume=False)
            query_window.resize(1280, 860)
            query_window.show()
            query_pacs = controller(query_window)
            query_pacs.save_node(NodeEntry(web_node, NodeProtocol.DICOMWEB), "")
            query_pacs.save_node(NodeEntry(dimse_node, NodeProtocol.DIMSE), "")
            query_pacs.show_query()
            app.processEvents()

            def filled_table(node_name: str, label: str) -> Callable[[], float]:
                """Search pressed in the dock until its table holds every study and is painted."""

                def run() -> float:
                    panel = query_pacs.panel
                    panel.node.setCurrentText(node_name)
                    panel.patient_id.setText("BENCH*")
                    panel.results.clear()
                    app.processEvents()
                    start = time.perf_counter()
                    panel.btn_search.click()
                    answered: list[float] = []
                    job = query_pacs._search_job
                    assert job is not None  # Orthanc takes ~0.5-1 s to answer: connected long before
                    job.done.connect(
                        lambda _m: answered.append(time.perf_counter()), Qt.ConnectionType.DirectConnection
                    )
                    _wait_for_events(app, lambda: panel.results.topLevelItemCount() > 0, "the first rows")
                    first_rows[label].append(time.perf_counter() - start)

                    def filled() -> bool:
                        rows = panel.results.topLevelItemCount()
                        return panel.btn_search.isEnabled() and rows == len(small)

                    _wait_for_events(app, filled, "the filled table")
                    panel.results.viewport().repaint()
                    end = time.perf_counter()
                    if answered:
                        table_part[label].append(end - answered[0])
                    return end - start

                return run

            def qido_ours() -> float:
                start = time.perf_counter()
                found = web.find_studies(StudyQuery(patient_id="BENCH*"))
                assert len(found) == len(small), len(found)
                return time.perf_counter() - start

            def cfind_ours() -> float:
                start = time.perf_counter()
                found = dimse.find_studies(StudyQuery(patient_id="BENCH*"))
                assert len(found) == len(small), len(found)
                return time.perf_counter() - start

            def qido_plain() -> float:
                start = time.perf_counter()
                resp = session.get(
                    f"{server.dicomweb_url}/studies?PatientID=BENCH*",
                    timeout=60,
                    headers={"Accept": "application/dicom+json"},
                )
                assert len(resp.json()) == len(small)
                return time.perf_counter() - start

            def findscu(keys: tuple[str, ...]) -> Callable[[], float]:
                def run() -> float:
                    args = ["findscu", "-S", "-aet", CLIENT_AET, "-aec", ORTHANC_AET]
                    for key in keys:
                        args += ["-k", key]
                    start = time.perf_counter()
                    subprocess.run(
                        [*args, "127.0.0.1", str(server.dicom_port)], check=True, capture_output=True
                    )
                    return time.perf_counter() - start

                return run

            methods: dict[str, Callable[[], float]] = {
                "C-GET (ours)": ours(dimse, "C-GET", study, series),
                "getscu (floor)": getscu,
                "bare pynetdicom C-GET (2nd floor)": bare_cget,
                "WADO-RS (ours)": ours(web, "WADO-RS", study, series),
                "WADO-RS one download (floor)": wado_floor(study, series, series_bytes),
                "WADO-RS J2K (ours)": ours(web, "WADO-RS J2K", study_j2k, series_j2k),
                "WADO-RS J2K one download (floor)": wado_floor(study_j2k, series_j2k, j2k_bytes),
                "WADO-RS one download, a file per part": wado_split_floor(study, series, len(ct)),
                "WADO-RS J2K one download, a file per part": wado_split_floor(
                    study_j2k, series_j2k, len(ct_j2k)
                ),
                "first slice on screen (window)": gui_first_slice,
                "QIDO-RS 1,000 studies (ours)": qido_ours,
                "QIDO-RS to a filled table": filled_table(web_node.name, "QIDO-RS"),
                "QIDO-RS plain requests (floor)": qido_plain,
                "C-FIND 1,000 studies (ours)": cfind_ours,
                "C-FIND to a filled table": filled_table(dimse_node.name, "C-FIND"),
                "findscu": findscu(FINDSCU_TWO_KEYS),
                "findscu (our keys)": findscu(FINDSCU_OUR_KEYS),
            }
            if args.queries_only:
                methods = {k: v for k, v in methods.items() if k in QUERIES}
            if args.only == "wado":
                methods = {k: v for k, v in methods.items() if k.startswith("WADO-RS")}
            times: dict[str, list[float]] = {name: [] for name in methods}
            dirty_mb: list[float] = []  # dirty page cache left before each measurement (after the sync)
            names = list(methods)
            for rnd in range(args.repeats):
                # a new order each round (seeded), so no measurement always follows the same one (a
                # window's background decoding or the file system freeing the last one's files would
                # then always weigh on it); a short pause lets such work settle before each measurement
                order = names[:]
                random.Random(rnd).shuffle(order)
                for name in order:
                    if not args.no_sync:
                        dirty_mb.append(_write_back())
                    time.sleep(SETTLE_S)
                    times[name].append(methods[name]())
                print(f"round {rnd + 1}/{args.repeats} done", flush=True)
            query_window.close()
            app.processEvents()
            web.close()

    med = {name: statistics.median(v) for name, v in times.items()}
    if dirty_mb:
        left = statistics.median(dirty_mb)
        print(f"dirty page cache before a measurement (after the sync): median {left:.0f} MB")
    if args.queries_only:
        return _print_queries(args, times, med, first_rows, table_part)
    if args.only == "wado":
        return _print_wado(args, times, med, firsts, series_bytes, j2k_bytes)
    mb, mb_j2k = series_bytes / 1e6, j2k_bytes / 1e6
    print(
        f"\n{args.slices} slices 512x512, uncompressed ({mb:.0f} MB) and JPEG 2000 lossless "
        f"({mb_j2k:.0f} MB); {args.studies} studies; medians of {args.repeats} (s); "
        f"load average {os.getloadavg()[0]:.1f}:"
    )
    _print_rounds(times, med)
    print(
        "  first instance written: "
        + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in firsts.items())
    )
    _print_table_parts(first_rows, table_part)

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    for label, ours_name, floor_name in (
        ("C-GET / getscu", "C-GET (ours)", "getscu (floor)"),
        ("C-GET / bare pynetdicom", "C-GET (ours)", "bare pynetdicom C-GET (2nd floor)"),
        ("WADO-RS / one download", "WADO-RS (ours)", "WADO-RS one download (floor)"),
        ("WADO-RS J2K / one download", "WADO-RS J2K (ours)", "WADO-RS J2K one download (floor)"),
    ):
        ratio = med[ours_name] / med[floor_name]
        print(f"  {label:28s} {ratio:5.2f}x  (target <= 1.5x) {verdict(ratio <= 1.5)}")
    _print_per_file(med)
    first = med["first slice on screen (window)"]
    print(f"  {'first slice on screen':28s} {first:.3f} s (target <= 0.5 s) {verdict(first <= 0.5)}")
    _print_query_targets(med)
    floor = med["QIDO-RS plain requests (floor)"]
    print(f"  QIDO-RS filled table / plain request {med['QIDO-RS to a filled table'] / floor:.2f}x")
    return 0


def _print_per_file(med: dict[str, float]) -> None:
    for label, ours_name, floor_name in (
        ("WADO-RS / a file per part", "WADO-RS (ours)", "WADO-RS one download, a file per part"),
        ("WADO-RS J2K / a file per part", "WADO-RS J2K (ours)", "WADO-RS J2K one download, a file per part"),
    ):
        ratio = med[ours_name] / med[floor_name]
        print(f"  {label:30s} {ratio:5.2f}x  (reference: the files the cache must write)")
    for label, split, one in (
        ("uncompressed", "WADO-RS one download, a file per part", "WADO-RS one download (floor)"),
        ("JPEG 2000", "WADO-RS J2K one download, a file per part", "WADO-RS J2K one download (floor)"),
    ):
        print(f"  a file per part / one file, {label}: {med[split] / med[one]:.2f}x")


def _print_wado(
    args: argparse.Namespace,
    times: dict[str, list[float]],
    med: dict[str, float],
    firsts: dict[str, list[float]],
    series_bytes: int,
    j2k_bytes: int,
) -> int:
    print(
        f"\n{args.slices} slices 512x512, uncompressed ({series_bytes / 1e6:.0f} MB) and JPEG 2000 lossless "
        f"({j2k_bytes / 1e6:.0f} MB), WADO-RS only; medians of {args.repeats} (s); "
        f"load average {os.getloadavg()[0]:.1f}:"
    )
    _print_rounds(times, med)
    print(
        "  first instance written: "
        + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in firsts.items() if v)
    )
    for label, ours_name, floor_name in (
        ("WADO-RS / one download", "WADO-RS (ours)", "WADO-RS one download (floor)"),
        ("WADO-RS J2K / one download", "WADO-RS J2K (ours)", "WADO-RS J2K one download (floor)"),
    ):
        ratio = med[ours_name] / med[floor_name]
        print(f"  {label:28s} {ratio:5.2f}x  (target <= 1.5x) {'OK' if ratio <= 1.5 else 'MISSED'}")
    _print_per_file(med)
    return 0


def _print_rounds(times: dict[str, list[float]], med: dict[str, float]) -> None:
    for name, value in med.items():
        rounds = " ".join(f"{v:.3f}" for v in times[name])
        print(f"  {name:42s} {value:7.3f}   (rounds: {rounds})")


def _print_table_parts(first_rows: dict[str, list[float]], table_part: dict[str, list[float]]) -> None:
    print(
        "  first rows in the table: "
        + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in first_rows.items())
    )
    print(
        "  answer parsed -> table filled and painted (the table's part): "
        + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in table_part.items() if v)
    )


def _print_query_targets(med: dict[str, float]) -> None:
    for name in ("QIDO-RS to a filled table", "C-FIND to a filled table"):
        ok = "OK" if med[name] <= 0.3 else "MISSED"
        print(f"  {name:28s} {med[name]:.3f} s (target <= 0.3 s) {ok}")


def _print_queries(
    args: argparse.Namespace,
    times: dict[str, list[float]],
    med: dict[str, float],
    first_rows: dict[str, list[float]],
    table_part: dict[str, list[float]],
) -> int:
    print(
        f"\n{args.studies} studies, queries only; medians of {args.repeats} (s); "
        f"load average {os.getloadavg()[0]:.1f}:"
    )
    _print_rounds(times, med)
    _print_table_parts(first_rows, table_part)
    _print_query_targets(med)
    for name, floor in (
        ("C-FIND 1,000 studies (ours)", "findscu (our keys)"),
        ("C-FIND to a filled table", "findscu (our keys)"),
        ("C-FIND 1,000 studies (ours)", "findscu"),
        ("QIDO-RS to a filled table", "QIDO-RS plain requests (floor)"),
    ):
        print(f"  {name} / {floor}: {med[name] / med[floor]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
