"""Streaming a retrieved series into the preview (issue 13 item 2): what it costs, in the real window.

Starts a throw-away Orthanc (Debian packages orthanc, orthanc-dicomweb), uploads a generated 300-slice
512 x 512 CT (uncompressed), and in each round, in a new seeded order, retrieves it by DICOMweb in a new
window (offscreen Qt, the cache empty): the study row selected in the PACS dock, **Retrieve** pressed,
until the study is loaded and shown. Two ways, interleaved:

- **streaming** (what the window does): the first image, then the series growing in (at most every
  0.5 s and once the window has taken the previous one), then the loaded study;
- **first image only** (the baseline, as before): the same job, its previews stopped once the first
  image is shown (``PacsRetrieveJob.stop_preview``), so only the first image and the loaded study.

Prints medians of: click to the retrieve's end, click to the study loaded on screen, the process's CPU
time over that span (all threads), the GUI thread's time in ``MainWindow.update_preview``, and the
preview sizes of the last streaming round. Usage: ``python benchmarks/bench_pacs_stream.py [--repeats N]
[--slices 300]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydicom import dcmread  # noqa: E402

from benchmarks.bench_pacs import _wait, empty_cache, retrieve_window  # noqa: E402
from tests.factories import write_ct_series  # noqa: E402
from tests.pacs.orthanc import PASSWORD, USER, running_orthanc, unavailable_reason  # noqa: E402
from viewer.core.dicom.model import Stack  # noqa: E402
from viewer.core.pacs import AuthKind, DicomWebClient, PacsNode, StudyQuery  # noqa: E402
from viewer.qt.app import create_application  # noqa: E402

SETTLE_S = 0.3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-pacs-stream-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["SLICEWISE_DATA_DIR"] = str(tmp / "data")  # the windows' settings, secrets and cache
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "data" / "config")
        app = create_application()
        ct = write_ct_series(
            tmp / "ct", args.slices, rows=512, columns=512, shuffle=False, random_names=False
        )
        head = dcmread(ct[0], stop_before_pixels=True)
        study = str(head.StudyInstanceUID)
        with running_orthanc(tmp / "orthanc") as server:
            server.upload(ct)
            node = PacsNode(
                "bench", dicomweb_url=server.dicomweb_url, auth=AuthKind.BASIC, username=USER, secret=PASSWORD
            )
            with DicomWebClient(node) as web:
                matches = web.find_studies(StudyQuery(study_uid=study))
            sizes: list[int] = []

            def run(streaming: bool) -> tuple[float, float, float, float]:
                win, pacs = retrieve_window(app, node, matches, study)
                win.settings.hang_on_open = False
                panel = pacs.panel
                in_update = [0.0]
                update = win.update_preview

                def timed_update(stack: Stack, message: str) -> bool:
                    t = time.perf_counter()
                    try:
                        return update(stack, message)
                    finally:
                        in_update[0] += time.perf_counter() - t

                win.update_preview = timed_update  # type: ignore[method-assign]
                finished: list[float] = []
                pacs.retrieve_finished.connect(lambda _r: finished.append(time.perf_counter()))
                seen: list[int] = []
                cpu0, start = time.process_time(), time.perf_counter()
                panel.btn_retrieve.click()
                job = pacs._retrieve
                assert job is not None
                job.first_image.connect(lambda s: seen.append(len(s)))
                if streaming:
                    job.preview_grown.connect(lambda s, _a, _e: seen.append(len(s)))
                else:
                    job.first_image.connect(lambda _s: job.stop_preview())
                _wait(
                    app,
                    lambda: bool(finished) and not win.is_loading() and win.current_stack() is not None,
                    "the retrieve and load",
                )
                loaded = time.perf_counter() - start
                cpu = time.process_time() - cpu0
                if streaming:
                    sizes[:] = seen
                win.close()
                app.processEvents()
                empty_cache(pacs.cache)
                return finished[0] - start, loaded, cpu, in_update[0]

            variants = {"streaming": True, "first image only (before)": False}
            times: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in variants}
            for rnd in range(args.repeats):
                order = list(variants)
                random.Random(rnd).shuffle(order)
                for name in order:
                    time.sleep(SETTLE_S)
                    times[name].append(run(variants[name]))
                print(f"round {rnd + 1}/{args.repeats} done", flush=True)

    print(
        f"\n{args.slices} slices 512x512 uncompressed, DICOMweb, new window each; medians of {args.repeats} "
        f"(s); load average {os.getloadavg()[0]:.1f}:"
    )
    print(f"  {'':28s} {'retrieved':>10s} {'loaded':>8s} {'CPU':>8s} {'update_preview':>15s}")
    med: dict[str, list[float]] = {}
    for name, rows in times.items():
        med[name] = [statistics.median(r[k] for r in rows) for k in range(4)]
        r, loaded, cpu, upd = med[name]
        print(f"  {name:28s} {r:10.3f} {loaded:8.3f} {cpu:8.3f} {upd:15.3f}")
    s, b = med["streaming"], med["first image only (before)"]
    print(
        f"  streaming / before: retrieved {s[0] / b[0]:.2f}x, loaded {s[1] / b[1]:.2f}x, "
        f"CPU {s[2] / b[2]:.2f}x"
    )
    print(f"  preview sizes (last streaming round): {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
