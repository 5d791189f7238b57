"""PACS benchmark (issue 13): Slicewise's retrieve and query against a real Orthanc on loopback.

Starts a throw-away Orthanc (Debian packages orthanc, orthanc-dicomweb, orthanc-gdcm; DCMTK for the
floor), uploads a generated 300-slice 512 x 512 CT (uncompressed, Explicit VR Little Endian) and 1,000
one-instance studies, then times, interleaved in each round:

- C-GET: ``DimseClient.retrieve_series`` (C-FIND at image level, C-GET, each instance checked and written
  atomically into the cache) against DCMTK ``getscu`` writing the same series to a folder (the floor),
  and against a bare pynetdicom C-GET that only writes the bytes (a second, stricter floor);
- WADO-RS: ``DicomWebClient.retrieve_series`` (QIDO-RS, WADO-RS multipart, checked, cached) against one
  plain ``requests`` multipart download of the series written to one file (the floor);
- queries of the 1,000 studies: QIDO-RS and C-FIND through our clients (target <= 0.3 s), with a plain
  ``requests`` QIDO-RS and DCMTK ``findscu`` for reference.

Prints medians, time to the first instance written, and the ratios to the floors (target <= 1.5x).
Usage: ``python benchmarks/bench_pacs.py [--repeats N] [--slices 300] [--studies 1000]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import requests  # noqa: E402
from pydicom import dcmread  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from tests.factories import make_ct_slice, write_ct_series  # noqa: E402
from tests.pacs.orthanc import CLIENT_AET, ORTHANC_AET, PASSWORD, USER, running_orthanc, unavailable_reason  # noqa: E402
from viewer.core.pacs import (  # noqa: E402
    AuthKind,
    DicomWebClient,
    DimseClient,
    InstanceCache,
    PacsNode,
    RetrievedInstance,
    StudyQuery,
)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--studies", type=int, default=1000)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason or not shutil.which("getscu"):
        print(f"skipped: {reason or 'DCMTK getscu missing (Debian package dcmtk)'}")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-pacs-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"generating a {args.slices}-slice 512x512 CT and {args.studies} small studies ...", flush=True)
        ct = write_ct_series(
            tmp / "ct", args.slices, rows=512, columns=512, shuffle=False, random_names=False
        )
        small = _small_studies(tmp / "small", args.studies)
        head = dcmread(ct[0], stop_before_pixels=True)
        study, series = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)
        series_bytes = sum(p.stat().st_size for p in ct)
        with running_orthanc(tmp / "orthanc") as server:
            t0 = time.perf_counter()
            server.upload(ct)
            server.upload(small)
            print(
                f"Orthanc {server.dicomweb_url}: uploaded {len(ct) + len(small)} files in "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            dimse = DimseClient(
                PacsNode(
                    "bench",
                    host="127.0.0.1",
                    port=server.dicom_port,
                    called_ae=ORTHANC_AET,
                    calling_ae=CLIENT_AET,
                )
            )
            web = DicomWebClient(
                PacsNode(
                    "bench",
                    dicomweb_url=server.dicomweb_url,
                    auth=AuthKind.BASIC,
                    username=USER,
                    secret=PASSWORD,
                )
            )
            session = requests.Session()
            session.auth = (USER, PASSWORD)
            counter = iter(range(10**6))
            firsts: dict[str, list[float]] = {"C-GET": [], "WADO-RS": []}

            def ours(client: DicomWebClient | DimseClient, label: str) -> Callable[[], float]:
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
                    shutil.rmtree(cache.root)
                    return elapsed

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
                shutil.rmtree(out)
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
                shutil.rmtree(out)
                return elapsed

            def wado_floor() -> float:
                out = tmp / f"wado-{next(counter)}.multipart"
                start = time.perf_counter()
                with (
                    session.get(
                        f"{server.dicomweb_url}/studies/{study}/series/{series}",
                        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                        stream=True,
                        timeout=60,
                    ) as resp,
                    out.open("wb") as fh,
                ):
                    resp.raise_for_status()
                    for chunk in resp.iter_content(1 << 20):
                        fh.write(chunk)
                elapsed = time.perf_counter() - start
                assert out.stat().st_size > series_bytes
                out.unlink()
                return elapsed

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

            def findscu() -> float:
                start = time.perf_counter()
                subprocess.run(
                    [
                        "findscu",
                        "-S",
                        "-aet",
                        CLIENT_AET,
                        "-aec",
                        ORTHANC_AET,
                        "-k",
                        "QueryRetrieveLevel=STUDY",
                        "-k",
                        "PatientID=BENCH*",
                        "-k",
                        "StudyInstanceUID",
                        "-k",
                        "PatientName",
                        "127.0.0.1",
                        str(server.dicom_port),
                    ],
                    check=True,
                    capture_output=True,
                )
                return time.perf_counter() - start

            methods: dict[str, Callable[[], float]] = {
                "C-GET (ours)": ours(dimse, "C-GET"),
                "getscu (floor)": getscu,
                "bare pynetdicom C-GET (2nd floor)": bare_cget,
                "WADO-RS (ours)": ours(web, "WADO-RS"),
                "WADO-RS one download (floor)": wado_floor,
                "QIDO-RS 1,000 studies (ours)": qido_ours,
                "QIDO-RS plain requests": qido_plain,
                "C-FIND 1,000 studies (ours)": cfind_ours,
                "findscu": findscu,
            }
            times: dict[str, list[float]] = {name: [] for name in methods}
            names = list(methods)
            for rnd in range(args.repeats):
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                for name in order:
                    times[name].append(methods[name]())
                print(f"round {rnd + 1}/{args.repeats} done", flush=True)
            web.close()

    med = {name: statistics.median(v) for name, v in times.items()}
    mb = series_bytes / 1e6
    print(f"\n{args.slices} slices 512x512 uncompressed ({mb:.0f} MB), medians of {args.repeats} (s):")
    for name, value in med.items():
        print(f"  {name:32s} {value:7.3f}")
    print(
        f"  first instance written: C-GET {statistics.median(firsts['C-GET']):.3f} s, "
        f"WADO-RS {statistics.median(firsts['WADO-RS']):.3f} s"
    )
    r_get = med["C-GET (ours)"] / med["getscu (floor)"]
    r_bare = med["C-GET (ours)"] / med["bare pynetdicom C-GET (2nd floor)"]
    r_wado = med["WADO-RS (ours)"] / med["WADO-RS one download (floor)"]
    print(f"  C-GET / getscu           {r_get:5.2f}x  (target <= 1.5x) {'OK' if r_get <= 1.5 else 'MISSED'}")
    print(
        f"  C-GET / bare pynetdicom  {r_bare:5.2f}x  (target <= 1.5x) {'OK' if r_bare <= 1.5 else 'MISSED'}"
    )
    print(
        f"  WADO-RS / one download   {r_wado:5.2f}x  (target <= 1.5x) {'OK' if r_wado <= 1.5 else 'MISSED'}"
    )
    for name in ("QIDO-RS 1,000 studies (ours)", "C-FIND 1,000 studies (ours)"):
        print(f"  {name:28s} {med[name]:.3f} s (target <= 0.3 s) {'OK' if med[name] <= 0.3 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
