"""Load benchmark (issues 2 and 14): Slicewise's loader against the loop a pydicom user writes.

Generates 300- and 1,000-slice 512 x 512 CT series and two lossless JPEG 2000 copies of the 300-slice one
in a temporary folder: ``j2k``, the generated slices as they are (a flat disc, ~12 kB a slice, ~6 ms to
decode), and ``j2k-noisy``, the same with CT-like noise (12 HU, the same seed every run) as real CT has
(~200 kB a slice, ~30 ms to decode), where the decoding itself, not what surrounds it, takes the time.
For each case, one child process times every method in turn, repeatedly (the methods interleaved, so a
shared machine's drift hits all alike; the files in the page cache after a warm-up round), and prints
medians and ratios:

- slicewise: ``load_paths(whole_volume=True, on_provisional=...)`` (as ``slicewise predict``: plain
  pixels are read during the scan, ``preread``): the provisional stack's middle slice (first slice:
  from the first files read, as the viewer previews them), the final stack's middle slice, then
  ``StackVolume(stack, preread=report.preread).load_all()`` (int16 for this CT, see ``modality_dtype``)
- naive int16 (the baseline): ``dcmread`` every file, sort by position, ``np.stack`` of
  ``pixel_array`` (int16), rescale in int16
- naive float32 (an extra row): the same loop converting every slice to float32 first
- raw read, bytes kept (the floor): every file's bytes read into fresh memory of their total size
  (one mapping faulted in with ``MAP_POPULATE``), as producing the volume needs
- raw read, buffer reused (an extra row): the same reads into one buffer freed and reused, which
  produces nothing and so faults in no fresh memory

Peak RSS is measured in one fresh process per method (``ru_maxrss`` is a process's high-water mark).
Targets: full volume <= 0.6 x naive int16 and <= 2 x the raw floor; first slice <= 0.15 s; peak RSS
<= 1.15 x the int16 volume + 150 MB; JPEG 2000 full <= 0.6 x naive int16 (both copies).
Usage: ``python benchmarks/bench_load.py [--repeats N] [--quick] [--cases scan,300,j2k,j2k-noisy,1000]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def method_ours(folder: Path) -> dict[str, float]:
    """What the viewer and ``slicewise predict`` do: ``load_paths`` (``whole_volume=True``: a compressed
    folder's decoders start during the scan), the first slice shown from the provisional stack
    (``on_provisional``, the first files read, as the viewer previews them) and again from the final
    one; then ``load_all``."""
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.model import Stack
    from viewer.core.dicom.volume import StackVolume

    t0 = time.perf_counter()
    t_early: list[float] = []

    def show_provisional(stack: Stack) -> None:
        with StackVolume(stack) as early:
            early.get_slice(len(early) // 2)
        t_early.append(time.perf_counter() - t0)

    report = load_paths([folder], whole_volume=True, on_provisional=show_provisional)
    t_scan = time.perf_counter() - t0
    (stack,) = report.all_stacks()
    vol = StackVolume(stack, preread=report.preread)
    vol.get_slice(len(vol) // 2)
    t_first = time.perf_counter() - t0
    volume = vol.load_all()
    t_full = time.perf_counter() - t0
    vol.close()
    assert volume.shape[0] == len(stack)
    # Read every page once, after the timing: decoder processes may have written the volume into shared
    # memory this process has not touched yet, which its peak RSS would otherwise leave out.
    volume.max()
    return {
        "scan": t_scan,
        "first": t_early[0] if t_early else t_first,
        "first_final": t_first,
        "full": t_full,
        "nbytes": volume.nbytes,
        "itemsize": volume.itemsize,
    }


def _naive_datasets(folder: Path) -> list[Any]:
    import pydicom

    datasets = [pydicom.dcmread(p) for p in _files(folder)]
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return datasets


def method_naive(folder: Path) -> dict[str, float]:
    """The baseline: what a pydicom user writes for CT (slope 1, integral intercept)."""
    import numpy as np

    t0 = time.perf_counter()
    datasets = _naive_datasets(folder)
    volume = np.stack([d.pixel_array for d in datasets])
    first = datasets[0]
    assert volume.dtype == np.int16 and float(first.RescaleSlope) == 1.0
    volume += np.int16(int(first.RescaleIntercept))
    t_full = time.perf_counter() - t0
    return {"first": t_full, "full": t_full, "nbytes": volume.nbytes, "itemsize": volume.itemsize}


def method_naive_float32(folder: Path) -> dict[str, float]:
    """The float32 loop this benchmark used before issue 14 (an extra row, not the baseline)."""
    import numpy as np

    t0 = time.perf_counter()
    datasets = _naive_datasets(folder)
    volume = np.stack(
        [
            d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
            for d in datasets
        ]
    )
    t_full = time.perf_counter() - t0
    return {"first": t_full, "full": t_full, "nbytes": volume.nbytes, "itemsize": volume.itemsize}


def method_raw(folder: Path) -> dict[str, float]:
    """Read every file's bytes into one buffer that is freed and reused: no output is produced, so no
    fresh memory is faulted in (an extra row; the floor is :func:`method_raw_kept`)."""
    t0 = time.perf_counter()
    total = 0
    for p in _files(folder):
        with open(p, "rb") as fh:
            total += len(fh.read())
    t_full = time.perf_counter() - t0
    return {"first": t_full, "full": t_full, "nbytes": total, "itemsize": 1}


def method_raw_kept(folder: Path) -> dict[str, float]:
    """The floor: every file's bytes read into fresh memory of their total size, as any loader that
    produces the volume must. The memory is one anonymous mapping faulted in with ``MAP_POPULATE``
    (the fastest way Linux hands out fresh memory); keeping ``read()`` results instead would measure
    whatever freed memory glibc's heap still holds from the method before (then no page is fresh)."""
    import mmap

    import numpy as np

    t0 = time.perf_counter()
    files = _files(folder)
    total = sum(p.stat().st_size for p in files)
    populate = getattr(mmap, "MAP_POPULATE", 0)
    buf = mmap.mmap(-1, max(total, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    kept = np.frombuffer(buf, dtype=np.uint8)
    at = 0
    for p in files:
        with open(p, "rb") as fh:
            at += fh.readinto(memoryview(kept[at:]))
    t_full = time.perf_counter() - t0
    del kept
    buf.close()
    return {"first": t_full, "full": t_full, "nbytes": at, "itemsize": 1}


METHODS: dict[str, Callable[[Path], dict[str, float]]] = {
    "raw": method_raw,
    "raw_kept": method_raw_kept,
    "naive": method_naive,
    "naive_float32": method_naive_float32,
    "ours": method_ours,
}
LABELS = {
    "raw": "raw read, buffer reused (extra)",
    "raw_kept": "raw read, bytes kept (floor)",
    "naive": "naive int16 loop (baseline)",
    "naive_float32": "naive float32 loop (extra)",
    "ours": "slicewise (int16)",
}


def child_timings(folder: Path, methods: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """All methods in this process, interleaved, after one warm-up round (page cache, imports,
    decoder processes started as in the app); medians per method."""
    import pydicom  # noqa: F401  (imports outside the timed region, for every method alike)

    import viewer.core.dicom.volume  # noqa: F401

    runs: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for r in range(repeats + 1):
        for m in methods:
            result = METHODS[m](folder)
            gc.collect()
            if r:
                runs[m].append(result)
    return {m: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for m, rs in runs.items()}


def child_peak(folder: Path, method: str) -> dict[str, float]:
    """One run of ``method`` in this fresh process: its peak RSS and the RSS after imports."""
    import pydicom  # noqa: F401

    import viewer.core.dicom.volume  # noqa: F401

    base = _rss_now()
    result = METHODS[method](folder)
    return {"peak": _peak_rss(), "base": base, "nbytes": result["nbytes"]}


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


CT_NOISE_HU = 12.0
CT_NOISE_SEED = 13


def store_noisy_j2k(paths: list[Path], dst: Path | None = None, *, seed: int = CT_NOISE_SEED) -> None:
    """Add CT-like noise (12 HU) to each slice and store it as JPEG 2000 lossless, in ``dst`` (same
    names) or in place: the generated slices alone (a flat disc) compress to ~12 kB, which no scanner's
    images do; with the noise each is ~2/5 of its uncompressed size, as real CT. Same ``seed``, same
    files every run."""
    import numpy as np
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    if dst is not None:
        dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for path in paths:
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float32) + rng.normal(0.0, CT_NOISE_HU, ds.pixel_array.shape)
        ds.PixelData = np.clip(hu, -32768, 32767).astype(np.int16).tobytes()
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        ds.save_as(path if dst is None else dst / path.name, enforce_file_format=True)


def run_json(args: list[str]) -> Any:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report_case(name: str, folder: Path, repeats: int, jpeg2000: bool = False) -> None:
    methods = ["raw", "raw_kept", "naive", "naive_float32", "ours"]
    results = run_json(["--timings", ",".join(methods), str(repeats), str(folder)])
    peaks = {m: run_json(["--peak", m, str(folder)]) for m in methods if m not in ("raw", "raw_kept")}
    ours, naive, floor = results["ours"], results["naive"], results["raw_kept"]
    vol_mb = ours["nbytes"] / MB
    dtype = {2: "int16", 4: "float32"}.get(int(ours["itemsize"]), "?")
    print(
        f"\n== {name}: {len(_files(folder))} files, volume {vol_mb:.0f} MB {dtype}; medians of {repeats} "
        "(one process, methods interleaved, page cache warm)"
    )
    print(f"  {'method':30s} {'full s':>8s} {'x naive':>8s} {'x floor':>8s} {'peak RSS MB':>12s}")
    for m in methods:
        r = results[m]
        peak = f"{peaks[m]['peak'] / MB:12.0f}" if m in peaks else f"{'':12s}"
        print(
            f"  {LABELS[m]:30s} {r['full']:8.3f} {r['full'] / naive['full']:8.2f} "
            f"{r['full'] / floor['full']:8.2f} {peak}"
        )
    r_full = ours["full"] / naive["full"]
    r_floor = ours["full"] / floor["full"]
    r_plain = ours["full"] / results["raw"]["full"]
    int16_bytes = ours["nbytes"] * 2 / ours["itemsize"]
    budget = 1.15 * int16_bytes + 150 * MB
    ok = {True: "OK", False: "MISSED"}
    print(
        f"  slicewise: scan {ours['scan']:.3f} s, first slice {ours['first']:.3f} s (provisional stack), "
        f"{ours['first_final']:.3f} s (final stack), full {ours['full']:.3f} s"
    )
    print(f"  full / naive int16 = {r_full:.2f}  (target <= 0.60) {ok[r_full <= 0.6]}")
    if not jpeg2000:
        print(f"  full / floor (raw read, bytes kept) = {r_floor:.2f}  (target <= 2.00) {ok[r_floor <= 2.0]}")
        print(f"  full / raw read, buffer reused (extra, produces no volume) = {r_plain:.2f}")
    print(f"  first slice        = {ours['first']:.3f} s (target <= 0.15 s) {ok[ours['first'] <= 0.15]}")
    print(
        f"  peak RSS = {peaks['ours']['peak'] / MB:.0f} MB "
        f"(after imports {peaks['ours']['base'] / MB:.0f} MB); "
        f"budget 1.15 x int16 volume + 150 MB = {budget / MB:.0f} MB: "
        f"{peaks['ours']['peak'] / budget:.2f} {ok[peaks['ours']['peak'] <= budget]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="300 slices only, no JPEG 2000")
    parser.add_argument(
        "--cases",
        default="300,j2k,j2k-noisy,1000",
        help="comma-separated subset of scan,300,j2k,j2k-noisy,1000",
    )
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--timings", nargs=3, metavar=("METHODS", "REPEATS", "FOLDER"), help=argparse.SUPPRESS
    )
    parser.add_argument("--peak", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, folder = args.child
        print(json.dumps(CHILDREN[method](Path(folder))))
        return
    if args.timings:
        methods, repeats, folder = args.timings
        print(json.dumps(child_timings(Path(folder), methods.split(","), int(repeats))))
        return
    if args.peak:
        method, folder = args.peak
        print(json.dumps(child_peak(Path(folder), method)))
        return
    cases = {"300"} if args.quick else set(args.cases.split(","))
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
            print("   serial = calling thread; threads = SCAN_THREADS (load_paths); threads4 = 4 threads")
            for m, r in scans.items():
                print(f"  {m:15s} {r['full']:.3f} s  ({int(r['n'])} headers)")
        if "300" in cases:
            report_case("CT 300 x 512 x 512, uncompressed", base / "ct300", args.repeats)
        if "j2k" in cases:
            t = time.perf_counter()
            make_j2k_copy(base / "ct300", base / "j2k300")
            print(f"\nencoded the JPEG 2000 lossless copy in {time.perf_counter() - t:.1f} s")
            report_case(
                "CT 300 x 512 x 512, JPEG 2000 lossless", base / "j2k300", max(1, args.repeats // 2), True
            )
        if "j2k-noisy" in cases:
            t = time.perf_counter()
            store_noisy_j2k(_files(base / "ct300"), base / "j2k300noisy")
            size = sum(p.stat().st_size for p in _files(base / "j2k300noisy")) / 300 / 1024
            took = time.perf_counter() - t
            print(f"\nencoded the noisy JPEG 2000 copy ({size:.0f} kB a slice) in {took:.1f} s")
            noise = f"CT-like noise ({CT_NOISE_HU:g} HU, seed {CT_NOISE_SEED})"
            report_case(
                f"CT 300 x 512 x 512, JPEG 2000 lossless, {noise}",
                base / "j2k300noisy",
                max(1, args.repeats // 2),
                True,
            )
        if "1000" in cases:
            make_series(base / "ct1000", 1000)
            report_case("CT 1000 x 512 x 512, uncompressed", base / "ct1000", args.repeats)
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
