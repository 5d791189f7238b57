"""MPR in the window: GUI-thread time per plane change (reslice + set image + render) in the MPR layout.

Run: ``QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_mpr_view.py [--changes 60 --rounds 3]``.

A 512x512x300 CT (0.5 mm pixels, 1 mm slices) is opened, shown as axial | coronal | sagittal (Alt+M) and,
once its volume is loaded (on the loader's thread, not measured here), each round moves every viewport
to a new plane in rotating order (interleaved, so machine load hits all alike): the axial plane (a strided
copy of one slice: the baseline a user would have from a plain slice change), the coronal and sagittal
planes (resliced on the GUI thread when the plane changes), and a 10 mm MIP slab of the coronal plane.
Then a 2x2 layout (acquired | coronal / sagittal | coronal MIP) is scrolled in its acquired viewport, with
the reference lines of that viewport redrawn in the other three, against the same change in 1x1 (issue
12's budget: <= 6 ms per slice change including render). These changes are timed as a wheel notch in the
app: the slice set, then the event loop until every view that must change (the scrolled one, and in 2x2
the three whose reference line moves) has painted once, as bench_scroll times its changes. Until session 10
a ``repaint()`` first painted the scrolled view a second time per change, in 1x1 and 2x2 alike (interleaved
on a quiet machine: 4.7-5.0 / 6.8-7.0 ms that way, 3.2-3.4 / 6.1-6.4 ms painting once).
Crosshair (``--crosshair``, on by default): coronal and sagittal turned 30° in the axial view (oblique
planes); each change moves the crosshair point in the axial viewport (both oblique planes scroll to it) or
turns the coronal plane one more degree; GUI-thread time (the state change, the views' requests, the
reference lines, repaint) and time until both turned planes are on screen.
Each time is ``view.set_index`` + ``repaint`` + ``processEvents`` of the window, i.e. all the GUI thread
does for one plane change (the plane is resliced on the viewport's own thread), and for MPR also the time
until the new plane is on screen; medians and the ratio to the axial change are printed. Issue 12's budget:
coronal + sagittal reslice <= 15 ms, 10 mm slab MIP <= 25 ms; the GUI thread never decodes.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from benchmarks.bench_scroll import PaintOnce  # noqa: E402
from tests.factories import write_ct_series  # noqa: E402
from viewer.core.geometry.orientation import Orientation  # noqa: E402
from viewer.core.geometry.reslice import SlabMode  # noqa: E402
from viewer.core.state import mpr  # noqa: E402
from viewer.core.state.layout import Layout  # noqa: E402
from viewer.qt.app import build_main_window, create_application  # noqa: E402
from viewer.qt.main_window import MainWindow  # noqa: E402
from viewer.qt.slice_view import SliceView  # noqa: E402

SIZE = (1600, 900)
LOAD_TIMEOUT_S = 300


def _wait(app: QApplication, done: object, what: str) -> None:
    deadline = time.perf_counter() + LOAD_TIMEOUT_S
    while not done():  # type: ignore[operator]
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} took more than {LOAD_TIMEOUT_S} s")
        app.processEvents()
        time.sleep(0.005)


def _change(app: QApplication, view: SliceView, index: int, shown: list[float] | None = None) -> float:
    """GUI-thread time of one change (set_index + repaint + events); with ``shown``, also appends the time
    until the new plane is on screen (resliced on the viewport's thread, then drawn)."""
    t = time.perf_counter()
    view.set_index(index)
    view.repaint()
    app.processEvents()
    gui = time.perf_counter() - t
    if shown is not None:
        deadline = t + 10
        while view.shown_index != view.index and time.perf_counter() < deadline:
            app.processEvents()
            time.sleep(0.0002)
        view.repaint()
        shown.append(time.perf_counter() - t)
    return gui


def _painted_change(app: QApplication, view: SliceView, index: int, paints: list[PaintOnce]) -> float:
    """GUI-thread time of one slice change of ``view`` as a wheel notch in the app: the slice set, then the
    event loop until every view in ``paints`` (this one, and in 2x2 the three whose reference line moves)
    has painted once. No ``repaint()`` first, which painted the scrolled view a second time per change."""
    t = time.perf_counter()
    for paint in paints:
        paint.arm()
    view.set_index(index)
    for paint in paints:
        paint.settle(app)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crosshair", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    os.environ.setdefault("SLICEWISE_DATA_DIR", tempfile.mkdtemp(prefix="slicewise-bench-"))
    app = create_application()
    with tempfile.TemporaryDirectory(prefix="slicewise-bench-") as tmp:
        folder = Path(tmp) / "ct300"
        write_ct_series(folder, 300, rows=512, columns=512, spacing_z=1.0, shuffle=False, random_names=False)
        window: MainWindow = build_main_window(offer_resume=False)
        window.resize(*SIZE)
        window.show()
        window.open_paths([folder])
        _wait(app, lambda: window.current_volume() is not None and not window.is_loading(), "Scanning")
        t0 = time.perf_counter()
        window.show_mpr()
        views = window.views()
        _wait(app, lambda: all(v.shown_index == v.index for v in views), "Loading the volume")
        print(f"volume loaded for MPR in {time.perf_counter() - t0:.2f} s (loader thread; GUI stayed live)")
        axial, coronal, sagittal = views
        window.state.set_active(1)
        names = ("axial", "coronal", "sagittal", "coronal MIP 10 mm")
        timings: dict[str, list[float]] = {name: [] for name in names}
        on_screen: dict[str, list[float]] = {name: [] for name in names}
        order = list(timings)
        for r in range(args.rounds):
            for k in range(args.changes):
                for name in order[k % 4 :] + order[: k % 4]:
                    if name == "coronal MIP 10 mm":
                        continue
                    view = {"axial": axial, "coronal": coronal, "sagittal": sagittal}[name]
                    n = view.count()
                    index = (37 * (k + r * args.changes) + 11) % n
                    timings[name].append(_change(app, view, index, on_screen[name]))
            window.set_slab(SlabMode.MIP, 10.0)
            _wait(app, lambda: coronal.shown_index == coronal.index, "The slab")
            for k in range(args.changes):
                n = coronal.count()
                name = "coronal MIP 10 mm"
                timings[name].append(_change(app, coronal, (53 * k + 7) % n, on_screen[name]))
            window.set_slab(None)
            _wait(app, lambda: coronal.shown_index == coronal.index, "The thin plane")
        crosshair: dict[str, list[float]] = {"move (oblique cor+sag)": [], "turn coronal 1 deg": []}
        on_thread = {"GUI": 0, "reslice threads": 0}
        crosshair_seen: dict[str, list[float]] = {name: [] for name in crosshair}
        if args.crosshair:
            window.state.set_active(0)
            window.set_crosshair_tool(True)
            window.state.rotate_plane(0, 1, math.radians(30))
            window.state.rotate_plane(0, 2, math.radians(30))
            _wait(app, lambda: all(v.shown_index == v.index for v in views), "The oblique planes")
            rng = np.random.default_rng(3)
            on_thread.update({"GUI": 0, "reslice threads": 0})
            real_reslice = mpr.reslice

            def counted(*a: object, **kw: object) -> object:  # where each plane is resliced
                gui = threading.current_thread() is threading.main_thread()
                on_thread["GUI" if gui else "reslice threads"] += 1
                return real_reslice(*a, **kw)  # type: ignore[arg-type]

            mpr.reslice = counted  # type: ignore[assignment]
            rows, cols = axial.image_size()
            for _ in range(args.rounds):
                for k in range(args.changes):
                    for name in (list(crosshair) if k % 2 else list(crosshair)[::-1]):
                        t = time.perf_counter()
                        if name.startswith("move"):
                            axial_plane = window.state.plane(0)
                            assert axial_plane is not None
                            rc = rng.uniform(0.25, 0.75, 2) * (rows, cols)
                            window.state.set_crosshair(0, axial_plane.pixel_to_patient(rc[0], rc[1]))
                        else:
                            step = 1.0 if (k // 10) % 2 == 0 else -1.0
                            window.state.rotate_plane(0, 1, math.radians(step))
                        for v in views:
                            v.repaint()
                        app.processEvents()
                        crosshair[name].append(time.perf_counter() - t)
                        deadline = t + 10
                        while (coronal.shown_index != coronal.index or sagittal.shown_index != sagittal.index
                               or coronal.planes() is None) and time.perf_counter() < deadline:
                            app.processEvents()
                            time.sleep(0.0002)
                        _wait(app, lambda: all(v.shown_index == v.index for v in views), "The turned plane")
                        coronal.repaint()
                        sagittal.repaint()
                        crosshair_seen[name].append(time.perf_counter() - t)
            mpr.reslice = real_reslice
            window.set_crosshair_tool(False)
            window.reset_planes()
        # 2x2: the stack as acquired (scrolled), coronal, sagittal and a MIP coronal, with reference lines
        # of the scrolled viewport drawn in the other three; against the same slice change in 1x1
        uid = window.current_stack().uid  # type: ignore[union-attr]
        grid: list[float] = []
        single: list[float] = []
        for r in range(args.rounds):
            window.set_layout(Layout.ONE)
            window.set_plane(Orientation.NATIVE)
            view = window.views()[0]
            _wait(app, lambda v=view: v.shown_index == v.index, "1x1")
            paints = [PaintOnce(view.graphics.viewport())]
            for k in range(args.changes):
                single.append(_painted_change(app, view, (41 * k + 3 + r) % view.count(), paints))
            window.set_layout(Layout.TWO_BY_TWO)
            for i, plane in ((1, Orientation.CORONAL), (2, Orientation.SAGITTAL), (3, Orientation.CORONAL)):
                window.show_in_viewport(i, uid, plane)
            window.state.set_active(3)
            window.set_slab(SlabMode.MIP, 10.0)
            window.state.set_active(0)
            views = window.views()
            _wait(app, lambda vs=views: all(v.shown_index == v.index for v in vs), "2x2")
            paints = [PaintOnce(v.graphics.viewport()) for v in views]
            for k in range(args.changes):
                grid.append(_painted_change(app, views[0], (41 * k + 3 + r) % views[0].count(), paints))
        ms, mg = statistics.median(single) * 1000, statistics.median(grid) * 1000
        print(f"slice change of the acquired stack, {args.rounds} x {args.changes} changes, incl. render "
              "(median):")
        print(f"  1x1 {ms:.2f} ms   2x2 with reference lines in the other three {mg:.2f} ms   "
              f"ratio {mg / ms:.2f}x")
        base = statistics.median(timings["axial"]) * 1000
        print(f"plane change in the MPR layout, 512x512x300 int16, {args.rounds} x {args.changes} changes: "
              "GUI thread per change incl. render (median, p95), and until the plane is on screen (median):")
        for name, values in timings.items():
            med = statistics.median(values) * 1000
            p95 = sorted(values)[int(0.95 * (len(values) - 1))] * 1000
            seen = statistics.median(on_screen[name]) * 1000
            print(f"  {name:18s} GUI {med:6.2f} ms   p95 {p95:6.2f} ms   ratio to axial {med / base:.2f}x   "
                  f"on screen {seen:6.2f} ms")
        if args.crosshair:
            print(f"crosshair on oblique planes (coronal and sagittal turned 30°), {args.rounds} x "
                  f"{args.changes}: GUI thread per change incl. render (median, p95), and until both planes "
                  "are on screen:")
            print(f"  planes resliced during the crosshair changes: {on_thread['GUI']} on the GUI thread, "
                  f"{on_thread['reslice threads']} on the viewports' reslice threads")
            for name, values in crosshair.items():
                med = statistics.median(values) * 1000
                p95 = sorted(values)[int(0.95 * (len(values) - 1))] * 1000
                seen = statistics.median(crosshair_seen[name]) * 1000
                print(f"  {name:24s} GUI {med:6.2f} ms   p95 {p95:6.2f} ms   "
                      f"ratio to axial {med / base:.2f}x   on screen {seen:6.2f} ms")
        window.close()


if __name__ == "__main__":
    main()
