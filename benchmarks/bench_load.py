"""Load benchmark (issue 2): Slicewise's loader against a naive pydicom loop and the raw-read floor.

Generates 300- and 1,000-slice 512 x 512 CT series (and a lossless JPEG 2000 copy of the 300-slice one)
in a temporary folder, then times each method in a fresh child process (so peak RSS is per method):

- ours: ``load_paths`` -> ``StackVolume.get_slice(middle)`` (first displayable slice) -> ``load_all``
- naive: ``dcmread`` every file, sort by position, ``np.stack`` of rescaled ``pixel_array``
- raw: read every file's bytes (the floor)

Prints medians over repeats (the methods take turns in each round) and the ratios against the issue's
targets. Also compares a thread pool with a process pool for the header scan.
Usage: ``python benchmarks/bench_load.py [--repeats N] [--quick] [--cases scan,300,j2k,1000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MB = 1024**2


def _rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- child-side methods ---------------------------------------------------------------------------
def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def child_ours(folder: Path) -> dict[str, float]:
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume

    base = _rss_now()
    t0 = time.perf_counter()
    report = load_paths([folder])
    t_scan = time.perf_counter() - t0
    (stack,) = report.all_stacks()
    vol = StackVolume(stack)
    vol.get_slice(len(vol) // 2)
    t_first = time.perf_counter() - t0
    volume = vol.load_all()
    t_full = time.perf_counter() - t0
    assert volume.shape[0] == len(stack)
    return {
        "scan": t_scan,
        "first": t_first,
        "full": t_full,
        "peak": _peak_rss(),
        "base": base,
        "nbytes": volume.nbytes,
    }


def child_ours_warm(folder: Path) -> dict[str, float]:
    """As in the app, where the slice decoder starts with the window and the pool when a compressed
    stack opens: both decoders already running."""
    from viewer.core.dicom.isolated import warm_async
    from viewer.core.dicom.pool import warm_pool

    warm_async()
    warm_pool()
    time.sleep(0.5)
    return child_ours(folder)


def child_naive(folder: Path) -> dict[str, float]:
    import numpy as np
    import pydicom

    base = _rss_now()
    t0 = time.perf_counter()
    datasets = [pydicom.dcmread(p) for p in _files(folder)]
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    volume = np.stack(
        [
            d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
            for d in datasets
        ]
    )
    t_full = time.perf_counter() - t0
    return {"first": t_full, "full": t_full, "peak": _peak_rss(), "base": base, "nbytes": volume.nbytes}


def child_raw(folder: Path) -> dict[str, float]:
    base = _rss_now()
    t0 = time.perf_counter()
    total = 0
    for p in _files(folder):
        with open(p, "rb") as fh:
            total += len(fh.read())
    t_full = time.perf_counter() - t0
    return {"first": t_full, "full": t_full, "peak": _peak_rss(), "base": base, "nbytes": total}


def _scan_chunk(paths: list[str]) -> int:
    from viewer.core.dicom.header import read_header
    from viewer.core.dicom.model import SliceSource

    return sum(1 for k, p in enumerate(paths) if not hasattr(read_header(SliceSource(Path(p)), k), "code"))


def child_scan_threads(folder: Path) -> dict[str, float]:
    from viewer.core.dicom.loader import scan_headers
    from viewer.core.dicom.model import SliceSource

    t0 = time.perf_counter()
    records, _, _ = scan_headers([SliceSource(p) for p in _files(folder)])
    return {"full": time.perf_counter() - t0, "n": len(records)}


def child_scan_threads4(folder: Path) -> dict[str, float]:
    import viewer.core.dicom.loader as loader

    loader.SCAN_THREADS = 4
    return child_scan_threads(folder)


def child_scan_serial(folder: Path) -> dict[str, float]:
    import viewer.core.dicom.header  # noqa: F401  (imports outside the timed region, as for the others)

    t0 = time.perf_counter()
    n = _scan_chunk([str(p) for p in _files(folder)])
    return {"full": time.perf_counter() - t0, "n": n}


def child_scan_processes(folder: Path) -> dict[str, float]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import viewer.core.dicom.header  # noqa: F401

    t0 = time.perf_counter()
    paths = [str(p) for p in _files(folder)]
    chunks = [paths[i : i + 32] for i in range(0, len(paths), 32)]
    with ProcessPoolExecutor(
        max_workers=os.cpu_count(), mp_context=multiprocessing.get_context("spawn")
    ) as ex:
        n = sum(ex.map(_scan_chunk, chunks))
    return {"full": time.perf_counter() - t0, "n": n}


CHILDREN = {
    "ours": child_ours,
    "ours_warm": child_ours_warm,
    "naive": child_naive,
    "raw": child_raw,
    "scan_serial": child_scan_serial,
    "scan_threads": child_scan_threads,
    "scan_threads4": child_scan_threads4,
    "scan_processes": child_scan_processes,
}


# --- parent side ----------------------------------------------------------------------------------
def run_child(method: str, folder: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, str(folder)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(method: str, folder: Path, repeats: int) -> dict[str, float]:
    return measure_interleaved([method], folder, repeats)[method]


def measure_interleaved(methods: list[str], folder: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Medians per method, the methods taking turns in each round: a shared machine's drift in speed
    then affects every method alike instead of whichever happened to run in a slow spell."""
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for _ in range(repeats):
        for m in methods:
            runs[m].append(run_child(m, folder))
    return {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}


def make_series(folder: Path, n: int) -> None:
    from tests.factories import write_ct_series

    write_ct_series(folder, n, rows=512, columns=512, spacing_z=1.0, seed=n)


def make_j2k_copy(src: Path, dst: Path) -> None:
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    dst.mkdir(parents=True, exist_ok=True)
    for p in _files(src):
        ds = pydicom.dcmread(p)
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        ds.save_as(dst / p.name, enforce_file_format=True)


def report_case(name: str, folder: Path, repeats: int, targets: dict[str, float], warm: bool) -> None:
    methods = ["ours", "naive", "raw"] + (["ours_warm"] if warm else [])
    results = measure_interleaved(methods, folder, repeats)
    ours, naive, raw = results["ours"], results["naive"], results["raw"]
    vol_mb = ours["nbytes"] / MB
    print(f"\n== {name}: {len(_files(folder))} files, volume {vol_mb:.0f} MB float32, medians of {repeats}")
    print(f"  raw read (floor)      full {raw['full']:7.3f} s   peak RSS {raw['peak'] / MB:6.0f} MB")
    print(f"  naive pydicom loop    full {naive['full']:7.3f} s   peak RSS {naive['peak'] / MB:6.0f} MB")
    print(
        f"  slicewise             scan {ours['scan']:7.3f} s   first slice {ours['first']:.3f} s   "
        f"full {ours['full']:.3f} s   peak RSS {ours['peak'] / MB:6.0f} MB (after imports +"
        f"{(ours['peak'] - ours['base']) / MB:.0f} MB)"
    )
    r_first = ours["first"] / naive["full"]
    r_full = ours["full"] / naive["full"]
    budget = 1.3 * ours["nbytes"] + 150 * MB
    print(
        f"  first slice / naive full = {r_first:.2f}  (target <= {targets['first']:.2f})"
        f" {'OK' if r_first <= targets['first'] else 'MISSED'}"
    )
    print(
        f"  full volume / naive full = {r_full:.2f}  (target <= {targets['full']:.2f})"
        f" {'OK' if r_full <= targets['full'] else 'MISSED'}"
    )
    print(f"  full volume / raw floor  = {ours['full'] / raw['full']:.1f}x")
    print(
        f"  peak RSS / (1.3 x volume + 150 MB) = {ours['peak'] / budget:.2f}  (target <= 1.00)"
        f" {'OK' if ours['peak'] <= budget else 'MISSED'};  naive: {naive['peak'] / budget:.2f}"
    )
    if warm:
        ours_w = results["ours_warm"]
        print(
            f"  slicewise, decoder processes pre-started (as in the app): first {ours_w['first']:.3f} s  "
            f"full {ours_w['full']:.3f} s  -> full / naive = {ours_w['full'] / naive['full']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="300 slices only, no JPEG 2000")
    parser.add_argument(
        "--cases", default="scan,300,j2k,1000", help="comma-separated subset of scan,300,j2k,1000"
    )
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, folder = args.child
        print(json.dumps(CHILDREN[method](Path(folder))))
        return
    cases = {"scan", "300"} if args.quick else set(args.cases.split(","))
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; files are in the page cache (warm reads)")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="slicewise-bench-") as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        make_series(base / "ct300", 300)
        print(f"generated 300 slices in {time.perf_counter() - t:.1f} s")
        if "scan" in cases:
            scans = {
                m: measure(m, base / "ct300", args.repeats)
                for m in ("scan_serial", "scan_threads", "scan_threads4", "scan_processes")
            }
            print("\n== header scan of 300 files (median wall time, incl. pool start-up)")
            print(
                "   serial = calling thread; threads = SCAN_THREADS (load_paths); threads4 = 4 threads"
            )
            for m, r in scans.items():
                print(f"  {m:15s} {r['full']:.3f} s  ({int(r['n'])} headers)")
        if "300" in cases:
            report_case(
                "CT 300 x 512 x 512, uncompressed",
                base / "ct300",
                args.repeats,
                {"first": 0.5, "full": 0.6},
                False,
            )
        if "j2k" in cases:
            t = time.perf_counter()
            make_j2k_copy(base / "ct300", base / "j2k300")
            print(f"\nencoded the JPEG 2000 lossless copy in {time.perf_counter() - t:.1f} s")
            report_case(
                "CT 300 x 512 x 512, JPEG 2000 lossless",
                base / "j2k300",
                args.repeats,
                {"first": 0.5, "full": 0.65},
                warm=True,
            )
        if "1000" in cases:
            make_series(base / "ct1000", 1000)
            report_case(
                "CT 1000 x 512 x 512, uncompressed",
                base / "ct1000",
                max(1, args.repeats - 1),
                {"first": 0.5, "full": 0.6},
                warm=False,
            )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
